"""The fit loop's structure: one progress object and its stop rules, the one step path (Lightning's
closure), and the run context through which modules reach the trainer."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ember
from ember.context import RunContext
from ember.trainer.progress import STOP_REASONS, FitProgress
from helpers import LinearModel, copy_weights, loader, quiet_trainer

# ---------------------------------------------------------------------- FitProgress.stop_reason


def test_stop_reason_is_none_while_nothing_applies():
    p = FitProgress(max_epochs=3, max_steps=10)
    p.start(distributed=False)
    p.global_step, p.current_epoch = 9, 2
    assert p.stop_reason() is None
    assert p.stop_reason(at_epoch_end=True) is None


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: p.on_signal("SIGTERM"), "signal"),
        (lambda p: setattr(p, "global_step", 10), "max_steps"),
        (lambda p: setattr(p, "time_up", True), "max_time"),
        (lambda p: p.request_stop(), "should_stop"),
    ],
)
def test_each_rule_gives_its_reason(setup, reason):
    p = FitProgress(max_epochs=100, max_steps=10)
    p.start(distributed=False)
    setup(p)
    assert p.stop_reason() == reason
    assert reason in STOP_REASONS


def test_a_signal_wins_over_every_other_rule():
    p = FitProgress(max_steps=1)
    p.start(distributed=False)
    p.global_step = 5
    p.request_stop()
    p.on_signal("SIGUSR1")
    assert p.stop_reason() == "signal"


def test_should_stop_waits_for_min_epochs_and_min_steps():
    p = FitProgress(max_epochs=100, min_epochs=2, min_steps=5)
    p.start(distributed=False)
    p.request_stop()
    p.current_epoch, p.global_step = 1, 10
    assert p.stop_reason() is None
    assert p.global_step >= p.ask_at_step  # the request stays in view: the next step asks again
    p.current_epoch, p.global_step = 2, 4
    assert p.stop_reason() is None
    p.global_step = 5
    assert p.stop_reason() == "should_stop"


def test_max_epochs_is_a_reason_only_at_an_epoch_end():
    p = FitProgress(max_epochs=2)
    p.start(distributed=False)
    p.current_epoch = 2
    assert p.stop_reason() is None
    assert p.stop_reason(at_epoch_end=True) == "max_epochs"


def test_the_clock_decides_max_time_in_one_process_only():
    p = FitProgress(max_time=60.0)
    p.start(distributed=False)
    p.deadline = time.monotonic() - 1.0
    assert p.stop_reason() == "max_time"
    q = FitProgress(max_time=60.0)
    q.start(distributed=True)  # the processes agree instead (the fit loop sets time_up)
    q.deadline = time.monotonic() - 1.0
    assert q.stop_reason() is None
    q.time_up = True
    assert q.stop_reason() == "max_time"


def test_the_per_step_check_is_armed_at_max_steps_and_by_requests():
    p = FitProgress(max_steps=7)
    p.start(distributed=False)
    assert p.ask_at_step == 7
    p.request_stop(False)
    assert p.ask_at_step == 7
    p.request_stop()
    assert p.ask_at_step == 0


def test_the_max_time_timer_asks_for_a_check(tmp_path):
    p = FitProgress(max_time=0.01)
    p.start(distributed=False)
    p.start_clock()
    try:
        for _ in range(500):
            if p.ask_at_step == 0:
                break
            time.sleep(0.01)
    finally:
        p.stop_clock()
    assert p.ask_at_step == 0
    assert p.stop_reason() == "max_time"


def test_progress_round_trips_through_its_state_dict():
    p = FitProgress(max_epochs=5)
    p.start(distributed=False)
    p.global_step, p.current_epoch, p.micro = 12, 3, 1
    p.request_stop()
    q = FitProgress(max_epochs=5)
    q.start(distributed=False)
    q.load_state_dict(p.state_dict())
    assert (q.global_step, q.current_epoch, q.micro, q.should_stop) == (12, 3, 1, True)


def test_a_run_stopped_by_max_time_does_not_save_should_stop():
    p = FitProgress(max_time=60.0)
    p.start(distributed=False)
    p.request_stop()
    p.time_up = True
    assert p.state_dict()["should_stop"] is False


# ---------------------------------------------------------------------- the step path


class Probe(LinearModel):
    """Records what the gradients look like in on_train_batch_end."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.grads_at_batch_end: list[bool] = []

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.grads_at_batch_end.append(self.layer.weight.grad is not None and bool(self.layer.weight.grad.abs().sum() > 0))


def test_gradients_are_populated_in_on_train_batch_end(tmp_path):
    model = Probe()
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(32, batch_size=8))
    assert model.grads_at_batch_end == [True] * 4


def test_lbfgs_runs_through_the_closure_like_a_hand_written_loop(tmp_path):
    class LBFGSModel(LinearModel):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters(), lr=0.5, max_iter=4)

    torch.manual_seed(0)
    model = LBFGSModel()
    reference = nn.Linear(3, 1)
    reference.load_state_dict(model.layer.state_dict())
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    batches = list(loader(32, batch_size=16))
    trainer.fit(model, loader(32, batch_size=16))

    opt = torch.optim.LBFGS(reference.parameters(), lr=0.5, max_iter=4)
    evaluations = 0
    for _ in range(2):
        for x, y in batches:

            def closure(x=x, y=y):
                nonlocal evaluations
                evaluations += 1
                opt.zero_grad()
                loss = F.mse_loss(reference(x), y)
                loss.backward()
                return loss

            opt.step(closure)
    assert trainer.global_step == 4
    assert model.training_step_calls == evaluations > 4  # LBFGS evaluated the closure several times per step
    torch.testing.assert_close(model.layer.weight.detach(), reference.weight.detach())
    torch.testing.assert_close(model.layer.bias.detach(), reference.bias.detach())


def test_an_overridden_optimizer_step_gets_a_real_closure(tmp_path):
    seen = []

    class Custom(LinearModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            assert callable(optimizer_closure)
            before = self.training_step_calls
            optimizer.step(closure=optimizer_closure)
            seen.append(self.training_step_calls - before)

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Custom(), loader(32, batch_size=8))
    assert seen == [1, 1, 1, 1]  # training_step ran inside optimizer.step, through the closure
    assert trainer.global_step == 4


def test_an_optimizer_step_that_never_runs_the_closure_is_an_error(tmp_path):
    class Forgets(LinearModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            pass

    with pytest.raises(RuntimeError, match="did not run optimizer_closure"):
        quiet_trainer(tmp_path, max_epochs=1).fit(Forgets(), loader(16, batch_size=8))


def test_accumulation_and_clipping_match_a_hand_written_loop(tmp_path):
    torch.manual_seed(1)
    model = LinearModel(lr=0.05)
    reference = LinearModel(lr=0.05)
    copy_weights(model, reference)
    quiet_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=3, gradient_clip_val=0.5).fit(model, loader(64, batch_size=8))
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    batches = list(loader(64, batch_size=8))
    for i, (x, y) in enumerate(batches):
        if i % 3 == 0:
            opt.zero_grad()
        (F.mse_loss(reference(x), y) / 3).backward()
        if (i + 1) % 3 == 0 or i + 1 == len(batches):
            torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 0.5)
            opt.step()
    torch.testing.assert_close(model.layer.weight.detach(), reference.layer.weight.detach())


def test_module_and_trainer_clip_with_the_same_routine(tmp_path):
    torch.manual_seed(2)
    a, b = LinearModel(), LinearModel()
    copy_weights(a, b)
    x, y = next(iter(loader(16, batch_size=16)))
    for m in (a, b):
        F.mse_loss(m(x), y).backward()
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    a.clip_gradients(opt, 0.01, "value")
    torch.nn.utils.clip_grad_value_(list(b.parameters()), 0.01)
    assert torch.equal(a.layer.weight.grad, b.layer.weight.grad)
    with pytest.raises(ValueError, match="gradient_clip_algorithm='l3'"):
        a.clip_gradients(opt, 1.0, "l3")


# ---------------------------------------------------------------------- the run context


def test_the_trainer_is_a_run_context(tmp_path):
    assert isinstance(quiet_trainer(tmp_path), RunContext)


def test_a_module_reaches_its_trainer_only_through_the_run_context():
    class FakeContext:
        """Just enough of a RunContext for Module.log, optimizers() and manual_backward."""

        def __init__(self):
            self.logged = []
            self.backward_calls = 0
            self.optimizers = ["raw"]
            self.step_optimizers = ["wrapped"]
            self.is_global_zero = True

        def log_value(self, name, value, *rest):
            self.logged.append((name, value))

        def manual_backward(self, loss, *args, **kwargs):
            self.backward_calls += 1

    model = LinearModel()
    fake = FakeContext()
    model.trainer = fake
    model.log("loss", 1.5)
    model.manual_backward(torch.tensor(1.0))
    assert fake.logged == [("loss", 1.5)]
    assert fake.backward_calls == 1
    assert model.optimizers() == "wrapped"
    assert model.optimizers(use_pl_optimizer=False) == "raw"


def test_should_stop_set_by_a_callback_ends_the_run_through_the_progress_object(tmp_path):
    class StopAt(ember.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                trainer.should_stop = True

    trainer = quiet_trainer(tmp_path, max_epochs=5, callbacks=[StopAt()])
    trainer.fit(LinearModel(), loader(64, batch_size=8))
    assert trainer.global_step == 3
    assert trainer.should_stop is True
    assert trainer.fit_progress.should_stop is True
    assert trainer.current_epoch == 1  # the epoch was ended early and counts as completed
