"""A tiny model, data and callbacks for exact-resume tests: run once uninterrupted, once stopped by an
exception and continued from a checkpoint with a fresh model and Trainer, then compare bitwise."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks.callback import Callback


class Crash(RuntimeError):
    """The simulated failure."""


class ResumeNet(ember.Module):
    """Two layers with optional dropout, Adam (stateful) and an optional scheduler."""

    def __init__(self, dropout: float = 0.0, scheduler: str = "none", lr: float = 0.02, log_val: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 1))
        # numpy and python RNGs are drawn from in every step, so their restore matters too
        self.noise: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        jitter = float(np.random.rand()) * 1e-3 + random.random() * 1e-3
        loss = F.mse_loss(self(x), y) + jitter
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        if self.hparams.log_val:
            self.log("val_loss", F.mse_loss(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.scheduler == "epoch":
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)}
        if self.hparams.scheduler == "epoch2":  # stepped every second epoch
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 2}}
        if self.hparams.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.8)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt


def dataset(n: int = 40, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True).sin() + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def make_loader(shuffle: bool = True, own_generator: bool = False, num_workers: int = 0, n: int = 40) -> DataLoader:
    generator = torch.Generator().manual_seed(123) if own_generator else None
    return DataLoader(
        dataset(n), batch_size=4, shuffle=shuffle, generator=generator, num_workers=num_workers,
        persistent_workers=False,
    )  # fmt: skip


def seed_all(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CrashAt(Callback):
    """Raises :class:`Crash` at the end of the ``at``-th training batch of the run (1-based)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.train_engine.state.iteration == self.at:
            raise Crash(f"simulated crash at batch {self.at}")


class CrashAtEpochEnd(Callback):
    """Raises :class:`Crash` once epoch ``epoch`` (0-based) has ended and been checkpointed: at the
    next epoch's start, or as training ends if that was the last epoch. (A plain callback's
    ``on_train_epoch_end`` runs before ModelCheckpoint's, as in Lightning, so the crash comes later.)"""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def _maybe_crash(self, trainer: Any) -> None:
        if trainer.current_epoch == self.epoch + 1:
            raise Crash(f"simulated crash after the end of epoch {self.epoch}")

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        self._maybe_crash(trainer)

    def on_train_end(self, trainer: Any, module: Any) -> None:
        self._maybe_crash(trainer)


class SaveAt(Callback):
    """``trainer.save_checkpoint`` at the end of the given batches (1-based run iteration)."""

    def __init__(self, directory: Path, at: set[int]) -> None:
        self.directory = Path(directory)
        self.at = at

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        it = trainer.train_engine.state.iteration
        if it in self.at:
            trainer.save_checkpoint(self.directory / f"at-{it}.ckpt")


def quiet(root: Path, **kwargs: Any) -> ember.Trainer:
    options: dict[str, Any] = dict(
        enable_progress_bar=False, enable_model_summary=False, logger=False, default_root_dir=root,
        num_sanity_val_steps=0, max_epochs=3,
    )  # fmt: skip
    options.update(kwargs)
    return ember.Trainer(**options)


def flat_tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested state dict, keyed by its path (tensors and plain values)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat_tensors(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flat_tensors(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = obj
    return out


def assert_same_state(a: Any, b: Any, what: str = "state") -> None:
    """``a`` and ``b`` have the same keys, and every tensor is ``torch.equal`` (every value ==)."""
    fa, fb = flat_tensors(a), flat_tensors(b)
    assert fa.keys() == fb.keys(), f"{what}: keys differ: {sorted(fa.keys() ^ fb.keys())}"
    for k in fa:
        va, vb = fa[k], fb[k]
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), f"{what}: {k} differs"
        else:
            assert va == vb, f"{what}: {k}: {va!r} != {vb!r}"


def training_state(trainer: ember.Trainer, model: nn.Module) -> dict[str, Any]:
    """What must match between an uninterrupted and a resumed run."""
    state: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in trainer.optimizers],
        "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
        "global_step": trainer.global_step,
    }
    scaler = trainer.precision_plugin.scaler
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state
