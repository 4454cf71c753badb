"""Stopping and counting, Lightning against Ember: where a fit ends (max_steps, max_epochs, max_time,
``trainer.should_stop`` set from different hooks, min_epochs/min_steps), what was run on the way
(training batches, validation runs, epoch and train end hooks) and what the trainer says afterwards."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import torch
from lightning_kit import EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module

STOP_HOOKS = ("training_step", "module.on_train_batch_end", "callback.on_train_batch_end", "on_train_epoch_start",
              "on_validation_end", "on_train_epoch_end")  # fmt: skip


def run_fit(
    fw: Framework,
    tmp_path: Any,
    stop_in: str | None = None,
    stop_when: Any = None,
    n_train: int = 16,
    checkpoint: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Fit the regression module (batches of 2) and report what a user observes. ``stop_in`` names a
    hook that sets ``trainer.should_stop = True`` when ``stop_when(trainer, batch_idx)`` holds."""
    events: list[tuple] = []

    def maybe_stop(where: str, trainer: Any, batch_idx: int = -1) -> None:
        if where == stop_in and stop_when(trainer, batch_idx):
            trainer.should_stop = True

    class Spy(fw.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            maybe_stop("callback.on_train_batch_end", trainer, batch_idx)

        def on_train_epoch_start(self, trainer, pl_module):
            events.append(("epoch_start", trainer.current_epoch, trainer.global_step))
            maybe_stop("on_train_epoch_start", trainer)

        def on_train_epoch_end(self, trainer, pl_module):
            events.append(("epoch_end", trainer.current_epoch, trainer.global_step, trainer.should_stop))
            maybe_stop("on_train_epoch_end", trainer)

        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                events.append(("val", trainer.current_epoch, trainer.global_step))

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                events.append(("val_end", trainer.current_epoch, trainer.global_step))
                maybe_stop("on_validation_end", trainer)

        def on_train_start(self, trainer, pl_module):
            events.append(("train_start", trainer.current_epoch, trainer.global_step))
            maybe_stop("on_train_start", trainer)

        def on_fit_start(self, trainer, pl_module):
            maybe_stop("on_fit_start", trainer)

        def on_sanity_check_end(self, trainer, pl_module):
            maybe_stop("on_sanity_check_end", trainer)

        def on_fit_end(self, trainer, pl_module):
            events.append(("fit_end", trainer.current_epoch, trainer.global_step))

        def on_train_end(self, trainer, pl_module):
            events.append(("train_end", trainer.current_epoch, trainer.global_step, trainer.should_stop))

    class Model(regression_module(fw)):
        def training_step(self, batch, batch_idx):
            events.append(("batch", self.trainer.current_epoch, batch_idx, self.trainer.global_step))
            maybe_stop("training_step", self.trainer, batch_idx)
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            maybe_stop("module.on_train_batch_end", self.trainer, batch_idx)

    callbacks: list = [Spy()]
    if checkpoint:
        callbacks.append(fw.ModelCheckpoint(dirpath=str(tmp_path / fw.name / "ckpts"), save_top_k=-1, save_last=True))
    options.setdefault("num_sanity_val_steps", 0)
    torch.manual_seed(0)
    trainer = fw.trainer(tmp_path / fw.name, callbacks=callbacks, enable_checkpointing=checkpoint, **options)
    quiet_fit(trainer, Model(), data(n_train, batch_size=2), data(4, batch_size=2))
    seen = {
        "events": events,
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "should_stop": trainer.should_stop,
        "status": str(trainer.state.status.value),
    }
    if checkpoint:
        seen["files"] = sorted(p.name for p in (tmp_path / fw.name / "ckpts").iterdir())
        last = torch.load(tmp_path / fw.name / "ckpts" / "last.ckpt", weights_only=False)
        seen["last"] = (last["epoch"], last["global_step"])
    return seen


def assert_same(tmp_path: Any, **kwargs: Any) -> dict[str, Any]:
    expected = run_fit(LIGHTNING, tmp_path, **kwargs)
    got = run_fit(EMBER, tmp_path, **kwargs)
    for key in expected:
        assert got[key] == expected[key], f"{key}: lightning {expected[key]}\n  ember {got[key]}"
    return expected


# ---------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "options",
    [
        dict(max_steps=5),  # mid-epoch (8 batches an epoch)
        dict(max_steps=5, val_check_interval=5),  # the last step is a validation batch
        dict(max_steps=6, val_check_interval=3),
        dict(max_steps=8),  # the epoch's last batch: its validation runs
        dict(max_steps=3, accumulate_grad_batches=2),  # counts optimizer steps: 6 batches
        dict(max_steps=3, accumulate_grad_batches=2, val_check_interval=6),
        dict(max_steps=5, accumulate_grad_batches=3),  # 3 steps an epoch (the last window is short)
        dict(max_steps=12, max_epochs=1),  # max_epochs first
        dict(max_steps=10, max_epochs=3),  # max_steps first
        dict(max_steps=-1, max_epochs=2),
        dict(max_epochs=None, max_steps=11),
        dict(max_epochs=-1, max_steps=9),
        dict(max_steps=5, limit_train_batches=3),
        dict(max_steps=5, limit_train_batches=0.5, val_check_interval=2),
        dict(max_steps=7, limit_train_batches=4, val_check_interval=2, max_epochs=5),
        dict(max_epochs=2, limit_train_batches=0.25, val_check_interval=1),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_limits_end_the_run_at_the_same_point(tmp_path, options):
    assert_same(tmp_path, **options)


@pytest.mark.parametrize("options", [dict(max_steps=5), dict(max_steps=8), dict(max_epochs=2), dict(max_steps=3, val_check_interval=3)], ids=str)
def test_checkpoints_at_the_end_of_the_run(tmp_path, options):
    assert_same(tmp_path, checkpoint=True, **options)


# ---------------------------------------------------------------------------------------- should_stop


def at_batch(epoch: int, batch_idx: int) -> Any:
    return lambda trainer, b: trainer.current_epoch == epoch and b == batch_idx


@pytest.mark.parametrize("stop_in", ["training_step", "module.on_train_batch_end", "callback.on_train_batch_end"])
@pytest.mark.parametrize(
    "options",
    [dict(max_epochs=3), dict(max_epochs=3, val_check_interval=0.5), dict(max_epochs=3, accumulate_grad_batches=3)],
    ids=str,
)
def test_should_stop_from_a_batch(tmp_path, stop_in, options):
    assert_same(tmp_path, stop_in=stop_in, stop_when=at_batch(1, 2), **options)


@pytest.mark.parametrize("stop_in", ["training_step", "callback.on_train_batch_end"])
def test_should_stop_on_the_validation_batch(tmp_path, stop_in):
    """The stop request comes in the batch that validates (val_check_interval=4: batch 3)."""
    assert_same(tmp_path, stop_in=stop_in, stop_when=at_batch(0, 3), max_epochs=3, val_check_interval=4)


def test_should_stop_on_the_last_batch_of_an_epoch(tmp_path):
    assert_same(tmp_path, stop_in="training_step", stop_when=at_batch(0, 7), max_epochs=3)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["", "checkpoint"])
@pytest.mark.parametrize("epoch", [0, 1])
def test_should_stop_from_on_train_epoch_start(tmp_path, epoch, checkpoint):
    """As Lightning, asked before the first batch: the epoch runs no batch and no validation."""
    when = lambda tr, b: tr.current_epoch == epoch  # noqa: E731
    assert_same(tmp_path, stop_in="on_train_epoch_start", stop_when=when, max_epochs=3, checkpoint=checkpoint)


def test_should_stop_from_on_train_epoch_end(tmp_path):
    assert_same(tmp_path, stop_in="on_train_epoch_end", stop_when=lambda tr, b: tr.current_epoch == 0, max_epochs=3)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["", "checkpoint"])
def test_should_stop_from_on_validation_end_mid_epoch(tmp_path, checkpoint):
    """The batch's validation ran: the stop does not run another one."""
    first = lambda tr, b: tr.current_epoch == 0  # noqa: E731
    assert_same(
        tmp_path, stop_in="on_validation_end", stop_when=first, max_epochs=3, val_check_interval=0.5, checkpoint=checkpoint
    )


@pytest.mark.parametrize("stop_in", ["on_fit_start", "on_sanity_check_end", "on_train_start"])
@pytest.mark.parametrize("options", [dict(max_epochs=3), dict(max_epochs=3, min_epochs=1)], ids=str)
def test_should_stop_before_training(tmp_path, stop_in, options):
    always = lambda tr, b: True  # noqa: E731
    assert_same(tmp_path, stop_in=stop_in, stop_when=always, num_sanity_val_steps=1, **options)


def test_should_stop_with_checkpointing(tmp_path):
    assert_same(tmp_path, stop_in="training_step", stop_when=at_batch(1, 2), max_epochs=3, checkpoint=True)


# ---------------------------------------------------------------------------------------- minimums


@pytest.mark.parametrize(
    "options",
    [
        dict(max_epochs=5, min_epochs=2),
        dict(max_epochs=5, min_epochs=3, val_check_interval=0.5),
        dict(max_epochs=5, min_steps=11),
        dict(max_epochs=5, min_steps=3),  # alone, min_steps means min_epochs=1 too
        dict(max_epochs=5, min_steps=3, min_epochs=0),
        dict(max_epochs=5, min_steps=0),
        dict(max_epochs=5, min_steps=20),
        dict(max_epochs=5, min_steps=12, min_epochs=1),
        dict(max_epochs=2, min_epochs=2),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
@pytest.mark.parametrize("stop_in", ["training_step", "on_train_epoch_end"])
def test_should_stop_waits_for_the_minimums(tmp_path, options, stop_in):
    always = lambda tr, b: True  # noqa: E731
    assert_same(tmp_path, stop_in=stop_in, stop_when=always, **options)


def test_should_stop_once_before_min_epochs(tmp_path):
    """Set once in the first epoch: the request stays and the run ends once min_epochs are done."""
    assert_same(tmp_path, stop_in="training_step", stop_when=at_batch(0, 1), max_epochs=6, min_epochs=3)


# ---------------------------------------------------------------------------------------- max_time


@pytest.mark.parametrize("max_time", [{"seconds": 0}, "00:00:00:00"], ids=["dict", "str"])
@pytest.mark.parametrize("options", [dict(max_epochs=3), dict(max_epochs=3, min_epochs=1), dict(max_epochs=3, min_steps=3)], ids=str)
def test_max_time_already_up(tmp_path, max_time, options):
    assert_same(tmp_path, max_time=max_time, **options)


# ---------------------------------------------------------------------------------------- sanity check


def sanity_batches(fw: Framework, tmp_path: Any, **options: Any) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []

    class Model(regression_module(fw)):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            if self.trainer.sanity_checking:
                seen.append((dataloader_idx, batch_idx))

    trainer = fw.trainer(tmp_path / fw.name, max_steps=1, **options)
    quiet_fit(trainer, Model(), data(8, batch_size=2), [data(10, batch_size=2), data(4, batch_size=2)])
    return seen


@pytest.mark.parametrize(
    "options",
    [dict(), dict(num_sanity_val_steps=3), dict(num_sanity_val_steps=-1), dict(num_sanity_val_steps=0),
     dict(num_sanity_val_steps=4, limit_val_batches=1), dict(num_sanity_val_steps=-1, limit_val_batches=3),
     dict(num_sanity_val_steps=-1, limit_val_batches=0.5)],
    ids=str,
)  # fmt: skip
def test_sanity_check_with_two_loaders(tmp_path, options):
    expected = sanity_batches(LIGHTNING, tmp_path, **options)
    assert sanity_batches(EMBER, tmp_path, **options) == expected


# ---------------------------------------------------------------------------------------- exceptions


def failing_fit(fw: Framework, tmp_path: Any, error: type[BaseException]) -> dict[str, Any]:
    calls: list[str] = []

    class Spy(fw.Callback):
        def on_exception(self, trainer, pl_module, exception):
            calls.append(f"on_exception:{type(exception).__name__}")

        def teardown(self, trainer, pl_module, stage):
            calls.append("teardown")

        def on_train_end(self, trainer, pl_module):
            calls.append("on_train_end")

        def on_fit_end(self, trainer, pl_module):
            calls.append("on_fit_end")

        def on_train_epoch_end(self, trainer, pl_module):
            calls.append("on_train_epoch_end")

    class Model(regression_module(fw)):
        def training_step(self, batch, batch_idx):
            if self.trainer.current_epoch == 1 and batch_idx == 2:
                raise error("boom")
            return super().training_step(batch, batch_idx)

        def on_exception(self, exception):
            calls.append("module.on_exception")

    trainer = fw.trainer(tmp_path / fw.name, max_epochs=3, callbacks=[Spy()])
    raised = None
    try:
        quiet_fit(trainer, Model(), data(16, batch_size=2))
    except BaseException as err:  # what escapes fit() is what is compared
        raised = type(err).__name__
    return {
        "raised": raised,
        "calls": calls,
        "status": str(trainer.state.status.value),
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "should_stop": trainer.should_stop,
    }


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_in_training_step(tmp_path, error):
    """Both: status "interrupted", the callbacks' on_exception, no on_train_end/on_fit_end, the
    counters where the error came. Pinned differences: Ember re-raises a KeyboardInterrupt where
    Lightning ignores SIGINT from then on and calls sys.exit(1) (SystemExit); Ember also calls the
    module's on_exception and the teardown hooks, which Lightning skips after an error."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        expected = failing_fit(LIGHTNING, tmp_path, error)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl+C after a KeyboardInterrupt
    got = failing_fit(EMBER, tmp_path, error)
    assert expected["raised"] == ("SystemExit" if error is KeyboardInterrupt else "RuntimeError")
    assert got["raised"] == error.__name__
    assert expected["calls"] == ["on_train_epoch_end", f"on_exception:{error.__name__}"]
    assert got["calls"] == [*expected["calls"], "module.on_exception", "teardown"]
    for key in ("status", "global_step", "current_epoch", "should_stop"):
        assert got[key] == expected[key], key
    assert got["status"] == "interrupted"
