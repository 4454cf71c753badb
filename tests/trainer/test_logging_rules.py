"""The rules ``self.log`` follows that the differential tests (tests/compat/lightning/
test_lightning_logging_*.py) do not reach: the per-step hooks are dispatched as they are (the hook
table costs nothing per step), batch sizes found in dataclass batches, the warning for
``logger=True`` without a logger, and refusals in checkpoint hooks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ember.callbacks import ModelCheckpoint
from ember.trainer.hooks import Dispatch
from ember.trainer.logging import EPOCH_LEVEL_HOOKS, REFUSING_HOOKS, LogContext, _infer_batch_size, guard_hook
from helpers import LinearModel, loader, quiet_trainer


class Hooks(LinearModel):
    def on_train_batch_end(self, outputs, batch, batch_idx):
        pass

    def on_train_epoch_end(self):
        pass


def test_per_step_hooks_are_dispatched_unwrapped(tmp_path):
    model = Hooks()
    dispatch = Dispatch(quiet_trainer(tmp_path), model, [])
    assert dispatch.calls("on_train_batch_end") == (model.on_train_batch_end,)  # nothing added per step
    (epoch_end,) = dispatch.calls("on_train_epoch_end")
    assert epoch_end != model.on_train_epoch_end  # marks the running hook for self.log


def test_the_guard_marks_the_hook_while_it_runs_and_restores_it():
    ctx = LogContext()
    seen = []
    inner = guard_hook(ctx, "on_save_checkpoint", lambda: seen.append(ctx.hook))
    outer = guard_hook(ctx, "on_train_epoch_end", lambda: (seen.append(ctx.hook), inner(), seen.append(ctx.hook)))
    outer()
    assert seen == ["on_train_epoch_end", "on_save_checkpoint", "on_train_epoch_end"]
    assert ctx.hook is None
    step = lambda: None  # noqa: E731
    assert guard_hook(ctx, "on_before_backward", step) is step
    assert not REFUSING_HOOKS & EPOCH_LEVEL_HOOKS


@dataclasses.dataclass
class Batch:
    ids: list
    x: torch.Tensor


@pytest.mark.parametrize(
    "batch, size",
    [
        (torch.zeros(5, 2), 5),
        (torch.tensor(3.0), 1),
        ({"name": ["a", "b"], "x": torch.zeros(7)}, 7),
        ([["a", 1], torch.zeros(3, 1)], 3),
        (Batch(ids=["a"], x=torch.zeros(4)), 4),
        (["only", "strings"], 1),
        (None, 1),
    ],
)
def test_batch_size_is_the_first_tensor_found(batch, size):
    assert _infer_batch_size(batch) == size


def test_logger_true_without_a_logger_warns(tmp_path):
    class Explicit(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss, logger=True)
            return loss

    with pytest.warns(UserWarning, match=r"self.log\('loss', ..., logger=True\).*no logger"):
        quiet_trainer(tmp_path, max_epochs=1, logger=False).fit(Explicit(), loader(16))


def test_logging_in_on_save_checkpoint_is_refused(tmp_path):
    class Saves(LinearModel):
        def on_save_checkpoint(self, checkpoint):
            self.log("saved", 1.0)

    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    with pytest.raises(RuntimeError, match="inside `on_save_checkpoint`"):
        trainer.fit(Saves(), loader(16))
