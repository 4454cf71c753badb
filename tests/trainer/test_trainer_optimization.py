"""Optimization: accumulation, clipping, configure_optimizers return forms, schedulers, manual
optimization and the overridable optimizer steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from helpers import TRUE_W, LinearModel, Stream, copy_weights, loader, quiet_trainer, regression_data


def hand_loop(model: nn.Module, batches, lr: float, accumulate: int = 1, epochs: int = 1, clip=None) -> int:
    """Lightning's automatic optimization written out: loss / k, step every k batches and at the
    end of the epoch; ``clip(params)`` before each step. Returns the number of optimizer steps."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps = 0
    for _ in range(epochs):
        n = len(batches)
        for i, (x, y) in enumerate(batches):
            (F.mse_loss(model(x), y) / accumulate).backward()
            if (i + 1) % accumulate == 0 or i + 1 == n:
                if clip is not None:
                    clip(list(model.parameters()))
                opt.step()
                opt.zero_grad()
                steps += 1
    return steps


# ---------------------------------------------------------------------- gradient accumulation


def test_accumulating_four_batches_equals_one_batch_four_times_larger(tmp_path):
    torch.manual_seed(0)
    small = LinearModel(lr=0.1)
    big = LinearModel(lr=0.1)
    copy_weights(small, big)
    t_small = quiet_trainer(tmp_path, max_epochs=3, accumulate_grad_batches=4)
    t_small.fit(small, loader(64, batch_size=4))
    t_big = quiet_trainer(tmp_path, max_epochs=3)
    t_big.fit(big, loader(64, batch_size=16))
    torch.testing.assert_close(small.layer.weight, big.layer.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(small.layer.bias, big.layer.bias, rtol=0, atol=1e-6)
    assert t_small.global_step == t_big.global_step == 3 * 4
    assert small.training_step_calls == 3 * 16
    assert not torch.equal(small.layer.weight, LinearModel().layer.weight)  # it did train


def test_leftover_micro_batches_are_stepped_at_epoch_end(tmp_path):
    torch.manual_seed(0)
    model = LinearModel(lr=0.1)
    reference = LinearModel(lr=0.1)
    copy_weights(model, reference)
    data = loader(56, batch_size=4)  # 14 batches: steps after 4, 8, 12 and the leftover 2
    trainer = quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=4)
    trainer.fit(model, data)
    steps = hand_loop(reference, list(data), lr=0.1, accumulate=4, epochs=2)
    assert trainer.global_step == steps == 2 * 4
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.layer.bias, reference.layer.bias, rtol=0, atol=1e-6)


def test_leftover_micro_batches_of_data_without_length_are_stepped(tmp_path):
    torch.manual_seed(0)
    model = LinearModel(lr=0.1)
    reference = LinearModel(lr=0.1)
    copy_weights(model, reference)
    trainer = quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=4)
    trainer.fit(model, DataLoader(Stream(56), batch_size=4))
    steps = hand_loop(reference, list(DataLoader(Stream(56), batch_size=4)), lr=0.1, accumulate=4, epochs=2)
    assert trainer.global_step == steps == 8
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=0, atol=1e-6)


def test_global_step_counts_optimizer_steps_not_batches(tmp_path):
    seen = []

    class Steps(LinearModel):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            seen.append(self.global_step)

    trainer = quiet_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=3)
    trainer.fit(Steps(), loader(48, batch_size=8))  # 6 batches
    assert seen == [0, 0, 1, 1, 1, 2]
    assert trainer.global_step == 2


# ---------------------------------------------------------------------- gradient clipping


class RecordingSGD(torch.optim.SGD):
    """SGD that records the gradients it steps with."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.norms: list[float] = []
        self.maxabs: list[float] = []

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # as torch's optimizers do: the closure makes the gradients
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        self.maxabs.append(max(float(g.abs().max()) for g in grads))
        super().step()
        return loss


class ClipModel(LinearModel):
    def __init__(self, lr=0.05):
        super().__init__(lr)
        self.pre_clip_norms: list[float] = []

    def configure_optimizers(self):
        self.opt = RecordingSGD(self.parameters(), lr=self.lr)
        return self.opt

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for p in self.parameters()]
        self.pre_clip_norms.append(float(torch.nn.utils.get_total_norm(grads)))


def test_gradient_clip_by_norm(tmp_path):
    torch.manual_seed(0)
    model = ClipModel()
    reference = LinearModel()
    copy_weights(model, reference)
    data = loader(64, batch_size=8, noise=0.1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    trainer.fit(model, data)
    assert max(model.pre_clip_norms) > 2.0  # the gradients really were larger
    assert max(model.opt.norms) <= 0.5 + 1e-5
    assert sum(n > 0.5 for n in model.pre_clip_norms) >= 3
    hand_loop(reference, list(data), lr=0.05, epochs=2, clip=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.5))
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.layer.bias, reference.layer.bias, rtol=0, atol=1e-6)


def test_gradient_clip_by_value(tmp_path):
    torch.manual_seed(0)
    model = ClipModel()
    reference = LinearModel()
    copy_weights(model, reference)
    data = loader(64, batch_size=8)
    trainer = quiet_trainer(tmp_path, max_epochs=1, gradient_clip_val=0.1, gradient_clip_algorithm="value")
    trainer.fit(model, data)
    assert max(model.opt.maxabs) <= 0.1 + 1e-7
    assert min(model.opt.maxabs) == pytest.approx(0.1)  # every step had some gradient above 0.1
    hand_loop(reference, list(data), lr=0.05, clip=lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.1))
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=0, atol=1e-6)


def test_no_clipping_by_default(tmp_path):
    torch.manual_seed(0)
    model = ClipModel()
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(64, batch_size=8))
    assert model.opt.norms == pytest.approx(model.pre_clip_norms)
    assert max(model.opt.norms) > 2.0


def test_configure_gradient_clipping_override(tmp_path):
    calls = []

    class Custom(ClipModel):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            calls.append((gradient_clip_val, gradient_clip_algorithm))
            self.clip_gradients(optimizer, 0.25, "norm")

    model = Custom()  # the Trainer does not clip: the override decides
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(32, batch_size=8))
    assert calls == [(None, "norm")] * 4
    assert max(model.opt.norms) <= 0.25 + 1e-5
    # as Lightning: a value other than the Trainer's is an error (use one of them)
    trainer = quiet_trainer(tmp_path, max_epochs=1, gradient_clip_val=3.0)
    with pytest.raises(ValueError, match=r"gradient_clip_val=3\.0.*clip_gradients\(gradient_clip_val=0\.25\)"):
        trainer.fit(Custom(), loader(32, batch_size=8))


def test_clip_gradients_takes_the_trainers_value_when_given_none(tmp_path):
    class Custom(ClipModel):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self.clip_gradients(optimizer)

    model = Custom()
    quiet_trainer(tmp_path, max_epochs=1, gradient_clip_val=0.25).fit(model, loader(32, batch_size=8))
    assert max(model.opt.norms) <= 0.25 + 1e-5


def test_clipping_under_16_mixed_unscales_first(tmp_path):
    torch.manual_seed(0)
    model = ClipModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, precision="16-mixed", gradient_clip_val=0.5)
    trainer.fit(model, loader(64, batch_size=8))
    finite = [n for n in model.opt.norms if n == n]
    assert finite and max(finite) <= 0.5 + 1e-3  # unscaled, then clipped (a scaled norm would be ~65536x)


# ---------------------------------------------------------------------- configure_optimizers forms


def _opt(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr)


def _step_lr(opt, gamma=0.5):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=gamma)


class Configurable(LinearModel):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def configure_optimizers(self):
        return self.make(self)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: _opt(m),
        lambda m: [_opt(m)],
        lambda m: (_opt(m),),
        lambda m: {"optimizer": _opt(m)},
        lambda m: [{"optimizer": _opt(m)}],
    ],
    ids=["optimizer", "list", "tuple", "dict", "list-of-dicts"],
)
def test_optimizer_forms_without_schedulers(tmp_path, make):
    torch.manual_seed(0)
    model = Configurable(make)
    trainer = quiet_trainer(tmp_path, max_epochs=20)
    trainer.fit(model, loader(64))
    assert len(trainer.optimizers) == 1 and isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert trainer.lr_scheduler_configs == []
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=1e-3)


def _tuple_form(m):
    opt = _opt(m)
    return [opt], [_step_lr(opt)]


def _dict_form(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": _step_lr(opt)}


def _dict_config_form(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": _step_lr(opt), "interval": "epoch"}}


@pytest.mark.parametrize("make", [_tuple_form, _dict_form, _dict_config_form], ids=["tuple", "dict", "dict-config"])
def test_epoch_schedulers_step_once_per_epoch(tmp_path, make):
    model = Configurable(make)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, loader(32, batch_size=8))
    assert len(trainer.lr_scheduler_configs) == 1
    cfg = trainer.lr_scheduler_configs[0]
    assert (cfg.interval, cfg.frequency) == ("epoch", 1)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert model.lr_schedulers() is cfg.scheduler


def test_step_interval_scheduler_with_frequency(tmp_path):
    lrs = []

    class Sched(LinearModel):
        def configure_optimizers(self):
            opt = _opt(self)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": _step_lr(opt), "interval": "step", "frequency": 2}}

        def on_train_batch_end(self, outputs, batch, batch_idx):
            lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    trainer = quiet_trainer(tmp_path, max_epochs=1, max_steps=7)
    trainer.fit(Sched(), loader(64, batch_size=8))
    assert trainer.global_step == 7
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_epoch_scheduler_with_frequency(tmp_path):
    class Sched(LinearModel):
        def configure_optimizers(self):
            opt = _opt(self)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": _step_lr(opt), "frequency": 2}}

    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.fit(Sched(), loader(16, batch_size=8))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


class PlateauModel(LinearModel):
    """Logs a fixed validation loss per epoch, from ``val_values``."""

    def __init__(self, val_values, monitor="val_loss"):
        super().__init__()
        self.val_values = list(val_values)
        self.monitor = monitor
        self.lrs: list[float] = []

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(self.val_values[self.current_epoch]))

    def on_train_epoch_end(self):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = _opt(self)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor}}


def test_reduce_lr_on_plateau_with_monitor(tmp_path):
    values = [1.0, 0.5, 0.7, 0.8, 0.4]
    model = PlateauModel(values)
    trainer = quiet_trainer(tmp_path, max_epochs=5, num_sanity_val_steps=0)
    trainer.fit(model, loader(16), loader(16))
    # by hand: the same scheduler fed the same values
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    expected_after = []
    for v in values:
        ref.step(v)
        expected_after.append(opt.param_groups[0]["lr"])
    assert expected_after == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected_after[-1])
    # on_train_epoch_end runs before the epoch's scheduler step
    assert model.lrs == pytest.approx([0.1, *expected_after[:-1]])


def test_reduce_lr_on_plateau_top_level_monitor_key(tmp_path):
    class TopLevel(PlateauModel):
        def configure_optimizers(self):
            opt = _opt(self)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": sched, "monitor": "val_loss"}

    trainer = quiet_trainer(tmp_path, max_epochs=3, num_sanity_val_steps=0)
    trainer.fit(TopLevel([1.0, 2.0, 3.0]), loader(16), loader(16))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)


def test_reduce_lr_on_plateau_with_unlogged_monitor_raises(tmp_path):
    model = PlateauModel([1.0, 1.0], monitor="nope")
    with pytest.raises(ValueError, match="nope"):
        quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0).fit(model, loader(16), loader(16))


class NeverTrains(LinearModel):
    def __init__(self, returned):
        super().__init__()
        self.returned = returned

    def configure_optimizers(self):
        return self.returned(self) if callable(self.returned) else self.returned


def _plateau_without_monitor(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}


def _bad_interval(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": _step_lr(opt), "interval": "batch"}}


def _bad_frequency(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": _step_lr(opt), "frequency": 0}}


def _unknown_key(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": _step_lr(opt), "intervall": "step"}}


def _foreign_scheduler(m):
    return [_opt(m)], [_step_lr(_opt(m))]  # the scheduler steps an optimizer that was not returned


def _scheduler_dict_without_scheduler(m):
    return {"optimizer": _opt(m), "lr_scheduler": {"interval": "step"}}


def _two_optimizers(m):
    return [_opt(m), _opt(m)]


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        ("adam", TypeError, "str"),
        (42, TypeError, "int"),
        ({"lr_scheduler": None}, TypeError, "optimizer"),
        (lambda m: {"optim": _opt(m)}, TypeError, "optimizer"),
        (lambda m: ([_opt(m)], ["not a scheduler"]), TypeError, "scheduler"),
        (lambda m: [[], []], TypeError, "optimizers"),
        (_plateau_without_monitor, ValueError, "monitor"),
        (_bad_interval, ValueError, "interval='batch'"),
        (_bad_frequency, ValueError, "frequency=0"),
        (_foreign_scheduler, ValueError, "wasn't returned"),
        (_scheduler_dict_without_scheduler, ValueError, "'scheduler'"),
        (_two_optimizers, ValueError, "automatic_optimization"),
    ],
    ids=[
        "str",
        "int",
        "dict-no-optimizer",
        "dict-wrong-key",
        "bad-scheduler",
        "empty-lists",
        "plateau-no-monitor",
        "bad-interval",
        "bad-frequency",
        "foreign-scheduler",
        "no-scheduler-key",
        "two-optimizers-automatic",
    ],
)
def test_bad_configure_optimizers_fails_before_any_step(tmp_path, returned, error, match):
    model = NeverTrains(returned)
    with pytest.raises(error, match=match):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(16))
    assert model.training_step_calls == 0


def test_unknown_scheduler_keys_warn_and_are_dropped(tmp_path):
    model = NeverTrains(_unknown_key)
    with pytest.warns(RuntimeWarning, match="intervall"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(16))
    assert model.training_step_calls == 2


def test_configure_optimizers_returning_none_warns_and_trains_without_stepping(tmp_path):
    model = NeverTrains(None)
    before = model.layer.weight.detach().clone()
    with pytest.warns(UserWarning, match="configure_optimizers"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(16))
    assert model.training_step_calls == 2
    assert torch.equal(model.layer.weight.detach(), before)


# ---------------------------------------------------------------------- manual optimization


class Manual(LinearModel):
    automatic_optimization = False

    def training_step(self, batch, batch_idx):
        self.training_step_calls += 1
        opt = self.optimizers()
        x, y = batch
        loss = F.mse_loss(self(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss


def test_manual_optimization_trains_and_counts_steps(tmp_path):
    torch.manual_seed(0)
    model = Manual()
    reference = LinearModel()
    copy_weights(model, reference)
    data = loader(64)
    trainer = quiet_trainer(tmp_path, max_epochs=20)
    trainer.fit(model, data)
    assert trainer.global_step == 160
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=1e-3)
    hand_loop(reference, list(data), lr=0.1, epochs=20)
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=0, atol=1e-6)


def test_manual_optimization_runs_the_step_hooks(tmp_path):
    calls = []

    class Hooks(Manual):
        def on_before_backward(self, loss):
            calls.append("before_backward")

        def on_after_backward(self):
            calls.append("after_backward")

        def on_before_optimizer_step(self, optimizer):
            calls.append("before_step")

        def on_before_zero_grad(self, optimizer):
            calls.append("before_zero_grad")

    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(Hooks(), loader(16))
    # as Lightning: on_before_zero_grad belongs to automatic optimization, not to opt.zero_grad() calls
    assert calls == ["before_backward", "after_backward", "before_step"]


def test_manual_optimization_with_two_optimizers(tmp_path):
    class TwoOpts(LinearModel):
        automatic_optimization = False

        def __init__(self):
            super().__init__()
            self.other = nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            opt_a, opt_b = self.optimizers()
            for opt, layer in ((opt_a, self.layer), (opt_b, self.other)):
                loss = F.mse_loss(layer(x), y)
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()

        def configure_optimizers(self):
            return [torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.SGD(self.other.parameters(), lr=0.1)]

    torch.manual_seed(0)
    model = TwoOpts()
    trainer = quiet_trainer(tmp_path, max_epochs=20)
    trainer.fit(model, loader(64))
    assert trainer.global_step == 2 * 160  # every optimizer step counts, as in Lightning
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=1e-3)
    assert torch.allclose(model.other.weight.detach(), TRUE_W, atol=1e-3)


def test_manual_optimization_under_16_mixed_scales_the_loss(tmp_path):
    torch.manual_seed(0)
    model = Manual()
    trainer = quiet_trainer(tmp_path, max_epochs=20, precision="16-mixed")
    trainer.fit(model, loader(64))
    assert trainer.precision_plugin.scaler.get_scale() > 1.0
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=2e-2)


@pytest.mark.parametrize(("option", "value"), [("accumulate_grad_batches", 2), ("gradient_clip_val", 1.0)])
def test_manual_optimization_rejects_automatic_only_options(tmp_path, option, value):
    model = Manual()
    with pytest.raises(ValueError, match=option):
        quiet_trainer(tmp_path, max_epochs=1, **{option: value}).fit(model, loader(16))
    assert model.training_step_calls == 0


# ---------------------------------------------------------------------- overridable steps


def test_optimizer_step_override_can_skip_steps(tmp_path):
    class EveryOther(LinearModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            if batch_idx % 2 == 0:
                optimizer.step(closure=optimizer_closure)
            else:  # as in Lightning: run training_step and backward without an update
                optimizer_closure()

    model = EveryOther()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader(64, batch_size=8))
    assert trainer.global_step == 4
    assert model.training_step_calls == 8


def test_optimizer_step_override_for_warmup(tmp_path):
    lrs = []

    class Warmup(LinearModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            for group in optimizer.param_groups:
                group["lr"] = 0.1 * min(1.0, (self.trainer.global_step + 1) / 4)
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step(closure=optimizer_closure)

    trainer = quiet_trainer(tmp_path, max_epochs=1, gradient_clip_val=100.0)
    trainer.fit(Warmup(), loader(48, batch_size=8))
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert trainer.global_step == 6


def test_optimizer_zero_grad_override(tmp_path):
    calls = []

    class Zero(LinearModel):
        def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
            calls.append((epoch, batch_idx))
            optimizer.zero_grad()

    quiet_trainer(tmp_path, max_epochs=2).fit(Zero(), loader(16, batch_size=8))
    assert calls == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_backward_override(tmp_path):
    calls = []

    class Back(LinearModel):
        def backward(self, loss, *args, **kwargs):
            calls.append(float(loss.detach()))
            (loss * 0).backward()

    model = Back()
    before = model.layer.weight.detach().clone()
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(16, batch_size=8))
    assert len(calls) == 2
    assert torch.equal(model.layer.weight.detach(), before)


def test_lr_scheduler_step_override(tmp_path):
    calls = []

    class Sched(LinearModel):
        def configure_optimizers(self):
            opt = _opt(self)
            return [opt], [_step_lr(opt)]

        def lr_scheduler_step(self, scheduler, metric):
            calls.append(metric)

    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(Sched(), loader(16))
    assert calls == [None, None, None]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)


def test_step_optimizer_forwards_attributes(tmp_path):
    seen = {}

    class Look(Manual):
        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            seen["lr"] = opt.param_groups[0]["lr"]
            seen["raw"] = self.optimizers(use_pl_optimizer=False)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    trainer.fit(Look(), loader(16))
    assert seen["lr"] == 0.1
    assert seen["raw"] is trainer.optimizers[0]


def test_regression_data_has_noise_when_asked():
    clean, noisy = regression_data(16), regression_data(16, noise=0.1)
    assert torch.equal(clean.tensors[0], noisy.tensors[0])
    assert not torch.equal(clean.tensors[1], noisy.tensors[1])


def test_manual_optimization_leaves_schedulers_to_the_module(tmp_path):
    class ManualSched(Manual):
        def configure_optimizers(self):
            opt = _opt(self)
            return [opt], [_step_lr(opt)]

        def on_train_epoch_end(self):
            if self.current_epoch % 2 == 1:
                self.lr_schedulers().step()

    trainer = quiet_trainer(tmp_path, max_epochs=4)
    trainer.fit(ManualSched(), loader(16))
    # stepped by the module after epochs 1 and 3 only, never by the Trainer (as in Lightning)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


def test_optimizers_are_instances_of_their_class_and_act_on_the_real_optimizer():
    from ember.trainer.stepping import StepOptimizer

    param = nn.Parameter(torch.ones(2))
    adam = torch.optim.Adam([param], lr=0.1)
    wrapped = StepOptimizer(adam)
    assert isinstance(wrapped, torch.optim.Adam) and type(wrapped).__name__ == "StepAdam"
    assert wrapped.param_groups is adam.param_groups and wrapped.state is adam.state
    wrapped.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5})
    wrapped.load_state_dict(wrapped.state_dict())
    assert len(adam.param_groups) == 2 and wrapped.param_groups is adam.param_groups
    with pytest.raises(RuntimeError, match=r"only while trainer\.fit"):
        wrapped.step()


def test_toggle_optimizer_keeps_flags_set_before(tmp_path):
    seen = []

    class Toggling(LinearModel):
        automatic_optimization = False

        def __init__(self):
            super().__init__()
            self.other = nn.Linear(3, 1)
            self.other.bias.requires_grad = False  # set by the user: kept through toggling

        def training_step(self, batch, batch_idx):
            _, opt_b = self.optimizers()
            with self.toggled_optimizer(opt_b):
                seen.append((self.layer.weight.requires_grad, self.other.weight.requires_grad, self.other.bias.requires_grad))
            seen.append((self.layer.weight.requires_grad, self.other.weight.requires_grad, self.other.bias.requires_grad))

        def configure_optimizers(self):
            return [torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.SGD(self.other.parameters(), lr=0.1)]

    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(Toggling(), loader(16))
    assert seen == [(False, True, False), (True, True, False)]
