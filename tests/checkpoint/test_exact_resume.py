"""Exact resume in-process: a run stopped by an exception and continued with ``fit(ckpt_path=...)``
by a fresh model and Trainer ends bitwise equal to the run that was never interrupted."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from resume_kit import (
    Crash,
    CrashAt,
    CrashAtEpochEnd,
    ResumeNet,
    SaveAt,
    assert_same_state,
    make_loader,
    quiet,
    seed_all,
    training_state,
)

from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import load_checkpoint


def uninterrupted(
    root: Path, model_kwargs: dict, loader_kwargs: dict, trainer_kwargs: dict, callbacks: Any = ()
) -> dict:
    seed_all()
    model = ResumeNet(**model_kwargs)
    trainer = quiet(root, enable_checkpointing=False, callbacks=list(callbacks), **trainer_kwargs)
    trainer.fit(model, make_loader(**loader_kwargs), make_loader(shuffle=False))
    return training_state(trainer, model)


def interrupted_then_resumed(
    root: Path,
    model_kwargs: dict,
    loader_kwargs: dict,
    trainer_kwargs: dict,
    crash: Any,
    checkpoint: Any,
    ckpt_path: str = "last",
    callbacks: Any = (),
) -> tuple[dict, Any]:
    seed_all()
    model = ResumeNet(**model_kwargs)
    trainer = quiet(root, callbacks=[checkpoint, crash, *callbacks], **trainer_kwargs)
    with pytest.raises(Crash):
        trainer.fit(model, make_loader(**loader_kwargs), make_loader(shuffle=False))
    # a different process state: other seeds, the RNGs moved on
    seed_all(999)
    torch.rand(17)
    model = ResumeNet(**model_kwargs)
    ckpt_cb = ModelCheckpoint(dirpath=checkpoint.dirpath, every_n_train_steps=checkpoint.every_n_train_steps)
    trainer = quiet(root, callbacks=[ckpt_cb, *callbacks], **trainer_kwargs)
    trainer.fit(model, make_loader(**loader_kwargs), make_loader(shuffle=False), ckpt_path=ckpt_path)
    return training_state(trainer, model), trainer


CASES = {
    "shuffled": ({}, {"shuffle": True}, {}),
    "shuffled-own-generator": ({}, {"shuffle": True, "own_generator": True}, {}),
    "unshuffled": ({}, {"shuffle": False}, {}),
    "dropout": ({"dropout": 0.3}, {"shuffle": True}, {}),
    "accumulate-3": ({}, {"shuffle": True}, {"accumulate_grad_batches": 3}),
    "epoch-scheduler": ({"scheduler": "epoch"}, {"shuffle": True}, {}),
    "epoch-scheduler-every-2": ({"scheduler": "epoch2"}, {"shuffle": True}, {"max_epochs": 4}),
    "step-scheduler": ({"scheduler": "step"}, {"shuffle": True}, {}),
    "16-mixed": ({"dropout": 0.2}, {"shuffle": True}, {"precision": "16-mixed"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mid_epoch_resume_is_bitwise_exact(tmp_path: Path, case: str) -> None:
    model_kwargs, loader_kwargs, trainer_kwargs = CASES[case]
    expected = uninterrupted(tmp_path / "a", model_kwargs, loader_kwargs, trainer_kwargs)
    # 10 batches per epoch: a checkpoint every 2 optimizer steps, the crash in the middle of epoch 2
    ckpt = ModelCheckpoint(dirpath=tmp_path / "b" / "ckpts", every_n_train_steps=2, save_top_k=-1)
    got, trainer = interrupted_then_resumed(
        tmp_path / "b", model_kwargs, loader_kwargs, trainer_kwargs, CrashAt(15), ckpt
    )
    assert_same_state(got, expected, case)
    assert trainer.current_epoch == trainer_kwargs.get("max_epochs", 3)
    if "precision" in trainer_kwargs:
        assert got["scaler"]["scale"] != 0 and "_growth_tracker" in got["scaler"]


def test_mid_epoch_resume_with_worker_processes(tmp_path: Path) -> None:
    loader_kwargs = {"shuffle": True, "num_workers": 2}
    trainer_kwargs = {"max_epochs": 1}
    expected = uninterrupted(tmp_path / "a", {}, loader_kwargs, trainer_kwargs)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "b" / "ckpts", every_n_train_steps=3, save_top_k=-1)
    got, _ = interrupted_then_resumed(tmp_path / "b", {}, loader_kwargs, trainer_kwargs, CrashAt(8), ckpt)
    assert_same_state(got, expected, "num_workers=2")


def test_resume_inside_a_gradient_accumulation(tmp_path: Path) -> None:
    """A checkpoint taken with 2 of 3 micro-batches accumulated carries their gradients."""
    trainer_kwargs = {"accumulate_grad_batches": 3}
    expected = uninterrupted(tmp_path / "a", {"dropout": 0.2}, {}, trainer_kwargs)
    seed_all()
    model = ResumeNet(dropout=0.2)
    trainer = quiet(
        tmp_path / "b", enable_checkpointing=False, callbacks=[SaveAt(tmp_path, {14}), CrashAt(16)], **trainer_kwargs
    )
    with pytest.raises(Crash):
        trainer.fit(model, make_loader(), make_loader(shuffle=False))
    saved = load_checkpoint(tmp_path / "at-14.ckpt")
    assert saved["loops"]["fit"]["micro"] == 1  # epoch 2 batch 4: 3 + 1 accumulated
    assert saved["loops"]["fit"]["grads"]
    seed_all(5)
    model = ResumeNet(dropout=0.2)
    trainer = quiet(tmp_path / "b", enable_checkpointing=False, **trainer_kwargs)
    trainer.fit(model, make_loader(), make_loader(shuffle=False), ckpt_path=tmp_path / "at-14.ckpt")
    assert_same_state(training_state(trainer, model), expected, "accumulation")


@pytest.mark.parametrize("loader_kwargs", [{"shuffle": True}, {"shuffle": True, "own_generator": True}])
@pytest.mark.parametrize("scheduler", ["epoch", "epoch2"])
def test_resume_from_a_checkpoint_saved_at_an_epoch_end(tmp_path: Path, loader_kwargs: dict, scheduler: str) -> None:
    """ModelCheckpoint saves in on_train_epoch_end, before the epoch's scheduler step: resuming
    finishes that epoch's tail (scheduler step) and the next epoch sees the next shuffle."""
    model_kwargs = {"scheduler": scheduler, "dropout": 0.1}
    trainer_kwargs = {"max_epochs": 4}
    expected = uninterrupted(tmp_path / "a", model_kwargs, loader_kwargs, trainer_kwargs)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "b" / "ckpts", save_top_k=-1)  # every epoch end
    got, _ = interrupted_then_resumed(
        tmp_path / "b", model_kwargs, loader_kwargs, trainer_kwargs, CrashAtEpochEnd(1), ckpt
    )
    assert_same_state(got, expected, f"epoch end, {scheduler}, {loader_kwargs}")


def test_resume_keeps_early_stopping_decisions(tmp_path: Path) -> None:
    """EarlyStopping's counters are in the checkpoint; the resumed run stops at the same epoch
    with the same weights as the uninterrupted one."""

    def stopper() -> EarlyStopping:
        # val_loss barely moves with this lr: patience runs out after a few epochs
        return EarlyStopping(monitor="val_loss", patience=1, min_delta=0.05)

    trainer_kwargs = {"max_epochs": 12}
    model_kwargs = {"lr": 0.002}
    seed_all()
    model = ResumeNet(**model_kwargs)
    ref = quiet(tmp_path / "a", enable_checkpointing=False, callbacks=[stopper()], **trainer_kwargs)
    ref.fit(model, make_loader(), make_loader(shuffle=False))
    expected = training_state(ref, model)
    stopped = ref.current_epoch
    assert 2 <= stopped < 12, stopped
    for crash_epoch in range(stopped):  # crash after each epoch-end checkpoint in turn
        root = tmp_path / f"b{crash_epoch}"
        ckpt = ModelCheckpoint(dirpath=root / "ckpts", save_top_k=-1)
        got, trainer = interrupted_then_resumed(
            root, model_kwargs, {}, trainer_kwargs, CrashAtEpochEnd(crash_epoch), ckpt, callbacks=[stopper()]
        )
        assert trainer.current_epoch == stopped, crash_epoch
        assert_same_state(got, expected, f"early stopping, crash after epoch {crash_epoch}")


def test_resume_after_max_steps_was_reached_trains_no_further(tmp_path: Path) -> None:
    trainer_kwargs = {"max_steps": 14, "max_epochs": None}
    expected = uninterrupted(tmp_path / "a", {}, {}, trainer_kwargs)
    seed_all()
    model = ResumeNet()
    trainer = quiet(tmp_path / "b", enable_checkpointing=False, callbacks=[SaveAt(tmp_path, {14})], **trainer_kwargs)
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    assert_same_state(training_state(trainer, model), expected, "max_steps")
    model = ResumeNet()
    trainer = quiet(tmp_path / "b", enable_checkpointing=False, **trainer_kwargs)
    trainer.fit(model, make_loader(), make_loader(shuffle=False), ckpt_path=tmp_path / "at-14.ckpt")
    assert trainer.global_step == 14
    assert_same_state(training_state(trainer, model), expected, "resumed at max_steps")


def test_last_finds_the_newest_checkpoint_and_none_warns(tmp_path: Path) -> None:
    model = ResumeNet()
    trainer = quiet(tmp_path, max_epochs=1)
    with pytest.warns(UserWarning, match="no checkpoint found"):
        trainer.fit(model, make_loader(), make_loader(shuffle=False), ckpt_path="last")
    assert trainer.global_step == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = quiet(tmp_path, max_epochs=2)
        trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False), ckpt_path="last")
    assert trainer.global_step == 20  # continued from epoch 1's checkpoint


def test_test_with_best_uses_the_best_weights(tmp_path: Path) -> None:
    seed_all()
    model = ResumeNet(lr=0.05)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", mode="max", save_top_k=1)
    trainer = quiet(tmp_path, callbacks=[ckpt], max_epochs=4)
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    best = ckpt.best_model_path
    assert best and Path(best).exists()
    best_weights = load_checkpoint(best)["state_dict"]
    # "worst" val_loss is the best under mode="max": not the final weights
    assert any(not torch.equal(best_weights[k], v) for k, v in model.state_dict().items())
    results = trainer.test(model, make_loader(shuffle=False), ckpt_path="best", verbose=False)
    assert all(torch.equal(best_weights[k], v) for k, v in model.state_dict().items())
    assert results[0]["test_loss"] == pytest.approx(float(ckpt.best_model_score), rel=1e-5)


def test_weights_only_checkpoint_cannot_resume(tmp_path: Path) -> None:
    model = ResumeNet()
    trainer = quiet(tmp_path, enable_checkpointing=False, max_epochs=1)
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    with pytest.raises(ValueError, match="weights only"):
        quiet(tmp_path, enable_checkpointing=False, max_epochs=2).fit(
            ResumeNet(), make_loader(), make_loader(shuffle=False), ckpt_path=tmp_path / "w.ckpt"
        )


@pytest.mark.filterwarnings("ignore:ckpt_path")
def test_a_run_stopped_by_max_time_continues_when_resumed(tmp_path: Path) -> None:
    """A job chain under a time limit: each job trains for max_time, checkpoints, and the next
    one continues (a run that EarlyStopping ended would stay ended)."""
    import time

    from ember.callbacks.callback import Callback

    class Slow(Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            time.sleep(0.15)

    steps = []
    for _ in range(2):
        ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
        trainer = quiet(tmp_path, callbacks=[ckpt, Slow()], max_epochs=5, max_time={"seconds": 0.5})
        trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False), ckpt_path="last")
        steps.append(trainer.global_step)
    assert 0 < steps[0] < 10 and steps[0] < steps[1] < 20


def test_resume_from_checkpoints_saved_by_mid_epoch_validation(tmp_path: Path) -> None:
    """val_check_interval: ModelCheckpoint saves after each validation, inside the epoch, keeping the
    best two by val_loss; the resumed run ends equal and keeps pruning the same directory."""
    trainer_kwargs = {"val_check_interval": 3, "max_epochs": 3}
    model_kwargs = {"dropout": 0.1}
    expected = uninterrupted(tmp_path / "a", model_kwargs, {}, trainer_kwargs)

    def checkpoint() -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=tmp_path / "b" / "ckpts", monitor="val_loss", save_top_k=2, save_last=True)

    seed_all()
    trainer = quiet(tmp_path / "b", callbacks=[checkpoint(), CrashAt(17)], **trainer_kwargs)
    with pytest.raises(Crash):
        trainer.fit(ResumeNet(**model_kwargs), make_loader(), make_loader(shuffle=False))
    last = load_checkpoint(tmp_path / "b" / "ckpts" / "last.ckpt")
    assert last["global_step"] == 16 and last["loops"]["fit"]["batches"] == 6  # epoch 2, after batch 6's validation
    model = ResumeNet(**model_kwargs)
    cb = checkpoint()
    trainer = quiet(tmp_path / "b", callbacks=[cb], **trainer_kwargs)
    trainer.fit(model, make_loader(), make_loader(shuffle=False), ckpt_path="last")
    assert_same_state(training_state(trainer, model), expected, "mid-epoch validation")
    assert len(list((tmp_path / "b" / "ckpts").glob("*.ckpt"))) == 3
    assert set(cb.best_k_models) == {str(p) for p in (tmp_path / "b" / "ckpts").glob("epoch*.ckpt")}


class _Stream(torch.utils.data.IterableDataset):
    """Samples in order, without a length; resumable when ``stateful``."""

    def __init__(self, stateful: bool) -> None:
        from resume_kit import dataset

        self.data = dataset(40)
        self.pos = 0
        if stateful:
            self.state_dict = lambda: {"pos": self.pos}
            self.load_state_dict = lambda state: setattr(self, "pos", state["pos"])

    def __iter__(self):
        while self.pos < len(self.data):
            self.pos += 1
            yield self.data[self.pos - 1]
        self.pos = 0


def _stream_run(root: Path, stateful: bool, crash: bool, ckpt_path: Any = None) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader

    seed_all()
    model = ResumeNet(dropout=0.2)
    ckpt = ModelCheckpoint(dirpath=root / "ckpts", every_n_train_steps=4, save_top_k=-1)
    trainer = quiet(root, callbacks=[ckpt, CrashAt(17)] if crash else [ckpt], max_epochs=3)
    trainer.fit(model, DataLoader(_Stream(stateful), batch_size=4), make_loader(shuffle=False), ckpt_path=ckpt_path)
    return trainer, model


def test_a_stateful_iterable_dataset_resumes_exactly(tmp_path: Path) -> None:
    trainer, model = _stream_run(tmp_path / "a", True, crash=False)
    expected = training_state(trainer, model)
    with pytest.raises(Crash):
        _stream_run(tmp_path / "b", True, crash=True)
    assert load_checkpoint(tmp_path / "b" / "ckpts" / "epoch=1-step=16.ckpt")["loops"]["fit"]["dataset"] == {"pos": 24}
    trainer, model = _stream_run(tmp_path / "b", True, crash=False, ckpt_path="last")
    assert_same_state(training_state(trainer, model), expected, "stateful IterableDataset")


def test_an_iterable_dataset_without_state_warns_that_its_epoch_restarts(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        _stream_run(tmp_path, False, crash=True)
    with pytest.warns(UserWarning, match="starts again from its beginning"):
        trainer, _ = _stream_run(tmp_path, False, crash=False, ckpt_path="last")
    assert trainer.current_epoch == 3


def test_resuming_a_finished_run_trains_nothing(tmp_path: Path) -> None:
    seed_all()
    model = ResumeNet()
    trainer = quiet(tmp_path, max_epochs=2)
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    done = training_state(trainer, model)
    calls = []

    class Counting(ResumeNet):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            calls.append(batch_idx)
            return super().training_step(batch, batch_idx)

    model = Counting()
    trainer = quiet(tmp_path, max_epochs=2)
    trainer.fit(model, make_loader(), make_loader(shuffle=False), ckpt_path="last")
    assert calls == [] and trainer.current_epoch == 2
    assert_same_state(training_state(trainer, model), done, "finished run")
    trainer = quiet(tmp_path, max_epochs=3)  # a larger max_epochs extends it
    trainer.fit(model, make_loader(), make_loader(shuffle=False), ckpt_path="last")
    assert len(calls) == 10 and trainer.global_step == 30


@pytest.mark.parametrize("checkpoint_on", ["validation", "validation-end"])
def test_resume_is_exact_when_a_checkpoint_falls_on_a_validation(tmp_path: Path, checkpoint_on: str) -> None:
    """Validation inside fit draws from the global RNG (its loader's iterator), so it must leave
    the training RNG stream as it was: a checkpoint written just before a validation (every 5 steps
    with validation every 5 batches) or during it (ModelCheckpoint on_validation_end) resumes
    bitwise, with dropout and shuffled data."""
    model_kwargs, loader_kwargs = {"dropout": 0.3}, {"shuffle": True}
    trainer_kwargs = {"max_epochs": 2, "val_check_interval": 5, "num_sanity_val_steps": 2}
    expected = uninterrupted(tmp_path / "a", model_kwargs, loader_kwargs, trainer_kwargs)
    if checkpoint_on == "validation":
        ckpt = ModelCheckpoint(dirpath=tmp_path / "b" / "ckpts", every_n_train_steps=5, save_top_k=-1)
    else:  # monitors val_loss: saved in on_validation_end, while validation's RNG draws are in effect
        ckpt = ModelCheckpoint(dirpath=tmp_path / "b" / "ckpts", monitor="val_loss", save_top_k=-1)
    got, _ = interrupted_then_resumed(tmp_path / "b", model_kwargs, loader_kwargs, trainer_kwargs, CrashAt(13), ckpt)
    assert_same_state(got, expected, f"checkpoint on {checkpoint_on}")
