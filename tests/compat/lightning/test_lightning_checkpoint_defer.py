"""``ModelCheckpoint(every_n_train_steps=N, monitor=<a validation metric>)``, Lightning 2.6 against
Ember: a step-triggered save that comes before validation has logged the monitored metric waits for
the end of the next validation (so does one on an epoch's last batch when validation follows it,
whose metric would be stale), and a monitor that is never logged is a warning until validation has
run, an error after.

Each scenario runs the same code on both frameworks and compares the files written (with each one's
``global_step``), every save as it happened (file name, global step, in order), the callback's
``best_model_path``/``best_model_score``/``last_model_path``/``kth_best_model_path``/``best_k_models``/
``current_score``, the error and whether a warning named the monitor.
"""

from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, LIGHTNING, Framework, checkpoint_view, data, on_both, regression_module
from torch.nn import functional as F

VALUES = (5.0, 3.0, 4.0, 1.0, 2.0, 6.0, 0.5, 7.0)  # val_loss of the 1st, 2nd, ... validation run


def scripted_module(fw: Framework, manual: bool = False) -> Any:
    """Regression whose ``val_loss`` is ``VALUES[i]`` at its i-th validation run (sanity checks not
    counted); with ``manual``, it steps its optimizer itself."""

    class Scripted(regression_module(fw)):
        def __init__(self) -> None:
            super().__init__()
            self.runs = 0
            self.automatic_optimization = not manual

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if not manual:
                return super().training_step(batch, batch_idx)
            opt = self.optimizers()
            opt.zero_grad()
            x, y = batch
            self.manual_backward(F.mse_loss(self(x), y))
            opt.step()
            return None

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", torch.tensor(VALUES[self.runs % len(VALUES)]))

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.runs += 1

    return Scripted()


def save_recorder(fw: Framework, folder: Path) -> Any:
    """A callback that looks into ``folder`` before each point where ModelCheckpoint may save (it
    runs before ModelCheckpoint on both frameworks) and lists every file written: (name, global_step)."""

    class Recorder(fw.Callback):
        def __init__(self) -> None:
            self.seen: dict[str, int] = {}
            self.saves: list[tuple[str, int]] = []

        def look(self) -> None:
            present = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
            for name in present:
                step = torch.load(folder / name, weights_only=False)["global_step"]
                if self.seen.get(name) != step:
                    self.seen[name] = step
                    self.saves.append((name, step))
            self.seen = {name: step for name, step in self.seen.items() if name in present}

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self.look()

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            self.look()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.look()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.look()

    return Recorder()


def fit(
    fw: Framework, root: Path, epochs: int = 3, validate: bool = True, manual: bool = False,
    trainer_args: dict[str, Any] | None = None, messages: list[str] | None = None, **checkpoint_args: Any,
) -> dict[str, Any]:  # fmt: skip
    """One fit (32 samples, 4 batches an epoch) with a ModelCheckpoint into ``root/c``: what it left."""
    folder = root / "c"
    cb = fw.ModelCheckpoint(dirpath=str(folder), **checkpoint_args)
    recorder = save_recorder(fw, folder)
    options = dict(max_epochs=epochs, num_sanity_val_steps=0)
    options.update(trainer_args or {})
    trainer = fw.trainer(root, enable_checkpointing=True, callbacks=[recorder, cb], **options)
    if fw is LIGHTNING:  # Lightning warns once per process about a missing monitor: forget earlier tests
        pl.callbacks.model_checkpoint.warning_cache.clear()
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.fit(scripted_module(fw, manual), data(32), data(16) if validate else None)
        except Exception as err:  # (Lightning: MisconfigurationException; Ember: ValueError)
            error = str(err)
    recorder.look()
    if messages is not None:
        messages.extend(str(w.message) for w in caught)
    monitor = checkpoint_args.get("monitor")
    return {
        **checkpoint_view(cb, folder),
        "saves": recorder.saves,
        "error": error is not None and monitor is not None and repr(monitor) in error,
        "raised": error is not None,
        "warned": monitor is not None and any(repr(monitor) in str(w.message) for w in caught),
    }


def without_last(seen: dict[str, Any]) -> dict[str, Any]:
    """``seen`` without ``last.ckpt``: Ember writes it at every scheduled save, Lightning 2.6 at an
    epoch's save only when a top-k file was written too (pinned in test_lightning_checkpoint.py)."""
    return {
        **seen,
        "files": {k: v for k, v in seen["files"].items() if k != "last.ckpt"},
        "saves": [(k, v) for k, v in seen["saves"] if k != "last.ckpt"],
        "last": None,
    }


# ---------------------------------------------------------------------- a validation-only monitor

CADENCES = {
    # validation at each epoch's end only: Lightning saves on train epoch end then, so the saves
    # deferred in the first epoch (no val_loss yet) are never made
    "val-at-epoch-end": dict(every=1, trainer={}),
    "val-at-epoch-end-every-4": dict(every=4, trainer={}),
    # validation less often than the step saves: every other epoch
    "val-every-2nd-epoch": dict(every=1, trainer=dict(check_val_every_n_epoch=2), epochs=4),
    "val-every-2nd-epoch-every-3": dict(every=3, trainer=dict(check_val_every_n_epoch=2), epochs=4),
    # validation twice an epoch: the save on the epoch's last batch waits for the fresh metric
    "val-twice-an-epoch": dict(every=2, trainer=dict(val_check_interval=0.5)),
    "val-twice-an-epoch-every-1": dict(every=1, trainer=dict(val_check_interval=0.5)),
    # validation every 3 batches inside an epoch (once an epoch, mid-epoch)
    "val-every-3-batches": dict(every=2, trainer=dict(val_check_interval=3)),
    # validation every 5 steps across epochs
    "val-every-5-steps": dict(every=3, trainer=dict(check_val_every_n_epoch=None, val_check_interval=5), epochs=4),
    "val-every-5-steps-every-2": dict(every=2, trainer=dict(check_val_every_n_epoch=None, val_check_interval=5), epochs=4),
    # the first batches have global step 0 (0 % N == 0): Lightning defers a save from there too
    "accumulate": dict(every=5, trainer=dict(accumulate_grad_batches=2, check_val_every_n_epoch=2), epochs=4),
    "sanity-check": dict(every=2, trainer=dict(val_check_interval=0.5, num_sanity_val_steps=2)),
}
KEEP = {"last-top1": dict(save_last=True, save_top_k=1), "all": dict(save_last=False, save_top_k=-1),
        "last-top2": dict(save_last=True, save_top_k=2), "top1": dict(save_last=False, save_top_k=1)}  # fmt: skip


@pytest.mark.parametrize("keep", list(KEEP))
@pytest.mark.parametrize("cadence", list(CADENCES))
def test_a_step_save_waits_for_the_validation_that_logs_the_monitor(tmp_path, cadence, keep):
    case = CADENCES[cadence]
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, epochs=case.get("epochs", 3), trainer_args=case["trainer"],
                             every_n_train_steps=case["every"], monitor="val_loss", **KEEP[keep]),
    )  # fmt: skip
    assert ember == lightning
    assert not ember["raised"] and not ember["warned"]


def test_the_expected_steps_when_validation_runs_twice_an_epoch(tmp_path):
    """Written out once: saves every 2 steps, validation after batches 2 and 4 of each epoch. The
    save at step 2 waits for val_loss; the one at step 4 (the epoch's last batch) for its fresh value;
    the one at step 6 (mid-epoch) is made at once with the value validation logged at step 4, as
    Lightning does: only an epoch's last batch waits for the validation that follows it."""
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, epochs=2, trainer_args=dict(val_check_interval=0.5),
                             every_n_train_steps=2, monitor="val_loss", save_top_k=-1),
    )  # fmt: skip
    assert ember == lightning
    # VALUES: 5.0 logged after step 2, 3.0 after step 4, 4.0 after step 6, 1.0 after step 8
    assert [step for _, step in ember["saves"]] == [2, 4, 6, 8]
    assert ember["best"] == "epoch=1-step=8.ckpt" and ember["best_score"] == 1.0
    assert ember["best_k"] == {"epoch=0-step=2.ckpt": 5.0, "epoch=0-step=4.ckpt": 3.0,
                               "epoch=1-step=6.ckpt": 3.0, "epoch=1-step=8.ckpt": 1.0}  # fmt: skip


def test_with_validation_at_epoch_end_only_the_first_epoch_saves_nothing(tmp_path):
    """Lightning saves on train epoch end with this validation schedule, so the saves deferred in the
    first epoch are dropped; later ones use the previous epoch's val_loss."""
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, epochs=2, every_n_train_steps=2, monitor="val_loss", save_top_k=-1),
    )
    assert ember == lightning
    assert [step for _, step in ember["saves"]] == [6, 8]
    assert ember["best_k"] == {"epoch=1-step=6.ckpt": 5.0, "epoch=1-step=8.ckpt": 5.0}


def test_a_training_metric_monitor_is_not_deferred(tmp_path):
    """A monitor logged by training_step is there at the step: the save happens at once."""

    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        folder = root / "c"
        cb = fw.ModelCheckpoint(dirpath=str(folder), every_n_train_steps=2, monitor="step", mode="max", save_top_k=-1)
        recorder = save_recorder(fw, folder)
        trainer = fw.trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=[recorder, cb],
                             num_sanity_val_steps=0, val_check_interval=0.5)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(scripted_module(fw), data(32), data(16))
        recorder.look()
        return {"saves": recorder.saves, "best": os.path.basename(cb.best_model_path)}

    lightning, ember = on_both(tmp_path, scenario)
    assert ember == lightning
    assert [step for _, step in ember["saves"]] == [2, 4, 6, 8]


# ---------------------------------------------------------------------- a monitor that never appears


@pytest.mark.parametrize(
    "case",
    [
        # validation at epoch end: the deferred saves are never made; no warning, no error
        dict(trainer={}, every_n_train_steps=2, save_last=True, raises=False),
        dict(trainer={}, every_n_train_steps=2, save_last=False, raises=False),
        # the deferred save after the first validation: an error (validation has run)
        dict(trainer=dict(val_check_interval=0.5), every_n_train_steps=2, save_last=True, raises=True),
        dict(trainer=dict(check_val_every_n_epoch=2), every_n_train_steps=1, raises=True),
        # no validation at all: the deferred saves wait for ever; last.ckpt at the end
        dict(trainer={}, validate=False, every_n_train_steps=2, save_last=True, raises=False),
        # after validation ran: an error
        dict(trainer={}, save_last=True, raises=True),
        # top-k off: the monitor is never looked at
        dict(trainer=dict(val_check_interval=0.5), every_n_train_steps=2, save_top_k=0, save_last=True, raises=False),
    ],
    ids=[
        "epoch-end-val-last", "epoch-end-val", "val-twice", "val-every-2nd-epoch", "no-val-steps",
        "epoch-end-after-val", "top-k-0",
    ],
)
def test_a_monitor_that_is_never_logged(tmp_path, case):
    case = dict(case)
    trainer_args, validate, raises = case.pop("trainer"), case.pop("validate", True), case.pop("raises")
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, validate=validate, trainer_args=trainer_args, monitor="val_acc", **case),
    )
    assert ember == lightning
    assert ember["raised"] == ember["error"] == raises and not ember["warned"]


@pytest.mark.parametrize(
    "case",
    [
        # no validation: a warning at each epoch's save, no top-k file
        dict(trainer={}, validate=False),
        # a warning at epoch 0's save (no validation yet), an error at epoch 1's (validation ran)
        dict(trainer=dict(check_val_every_n_epoch=2), save_on_train_epoch_end=True),
    ],
    ids=["no-validation", "before-then-after-validation"],
)
def test_a_monitor_never_logged_at_epoch_saves_warns_until_validation_ran(tmp_path, case):
    case = dict(case)
    trainer_args, validate = case.pop("trainer"), case.pop("validate", True)
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, validate=validate, trainer_args=trainer_args, monitor="val_acc",
                             save_last=True, **case),
    )  # fmt: skip
    assert without_last(ember) == without_last(lightning)
    assert ember["warned"] and ember["raised"] == validate and ember["best"] == ""
    # Ember's last.ckpt follows every scheduled save, a top-k file or not (a deliberate difference)
    assert [step for name, step in ember["saves"] if name == "last.ckpt"] == ([4] if validate else [4, 8, 12])


def test_a_missing_monitor_warns_before_validation_and_is_an_error_after(tmp_path):
    """``check_val_every_n_epoch=2`` with saves at each train epoch end: epoch 0 ends before any
    validation (a warning, no top-k file), epoch 1 after one (val_loss is there: a top-k file)."""
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, epochs=2, trainer_args=dict(check_val_every_n_epoch=2),
                             save_on_train_epoch_end=True, monitor="val_loss", save_last=True),
    )  # fmt: skip
    assert without_last(ember) == without_last(lightning)
    assert ember["warned"] and not ember["raised"]
    assert ember["best"] == "epoch=1-step=8.ckpt"
    assert ember["saves"] == [("last.ckpt", 4), ("epoch=1-step=8.ckpt", 8), ("last.ckpt", 8)]


# ---------------------------------------------------------------------- manual optimization


@pytest.mark.parametrize("keep", ["last-top1", "all"])
@pytest.mark.parametrize("cadence", ["val-at-epoch-end", "val-twice-an-epoch", "val-every-2nd-epoch"])
def test_manual_optimization(tmp_path, cadence, keep):
    """Under manual optimization Lightning does not hold back the save on an epoch's last batch
    (the stale-metric rule is for automatic optimization), but still waits for a missing metric."""
    case = CADENCES[cadence]
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, manual=True, epochs=case.get("epochs", 3), trainer_args=case["trainer"],
                             every_n_train_steps=case["every"], monitor="val_loss", **KEEP[keep]),
    )  # fmt: skip
    assert ember == lightning


# ---------------------------------------------------------------------- deliberate differences


def test_pinned_no_pre_optimization_state_warning_under_manual_optimization(tmp_path):
    """Lightning 2.6 warns at every step save under manual optimization that the checkpoint holds
    the weights after the optimizer step, and asks for ``self.saved_models`` (which it then loads
    into ``self.layer`` for the save). Ember writes the consistent state after the step (weights,
    optimizer and counters of the same moment, what an exact resume needs) and does not warn."""
    caught = {}
    for fw in BOTH:
        messages: list[str] = []
        fit(fw, tmp_path / fw.name, manual=True, epochs=1, every_n_train_steps=2, save_top_k=-1, messages=messages)
        caught[fw.name] = any("pre-optimization state" in m for m in messages)
    assert caught == {"lightning": True, "ember": False}


def test_pinned_train_time_interval_works_under_manual_optimization(tmp_path):
    """Lightning 2.6 checks ``train_time_interval`` only under automatic optimization: with
    ``automatic_optimization=False`` it never saves on time. Ember does."""
    interval = datetime.timedelta(microseconds=1)  # due at every batch
    lightning, ember = on_both(
        tmp_path, lambda fw, root: fit(fw, root, manual=True, epochs=1, train_time_interval=interval, save_top_k=-1)
    )
    assert lightning["files"] == {}
    assert ember["files"] == {f"epoch=0-step={s}.ckpt": s for s in (1, 2, 3, 4)}


def test_time_interval_under_automatic_optimization_is_as_lightning(tmp_path):
    interval = datetime.timedelta(microseconds=1)  # due at every batch
    lightning, ember = on_both(
        tmp_path, lambda fw, root: fit(fw, root, epochs=2, train_time_interval=interval, monitor="val_loss",
                                       trainer_args=dict(val_check_interval=0.5), save_top_k=-1),
    )  # fmt: skip
    assert ember == lightning
