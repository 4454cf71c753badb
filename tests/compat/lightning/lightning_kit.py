"""Differential testing against the real Lightning 2.6: the same scenario, written once, runs on
``pytorch_lightning`` and on Ember, and the tests compare what a user observes.

A scenario takes a :class:`Framework` (the names a user imports) and builds its module, callbacks
and Trainer from it, so the code is the same on both sides but for the imports.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ember
import ember.callbacks
import ember.loggers

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # "GPU available: False ...", tips


@dataclass(frozen=True)
class Framework:
    name: str
    Module: type
    Trainer: type
    Callback: type
    ModelCheckpoint: type
    EarlyStopping: type
    CSVLogger: type

    def trainer(self, root: Any, **kwargs: Any) -> Any:
        """A quiet Trainer on the CPU: no bar, summary, logger or checkpointing unless asked."""
        options: dict[str, Any] = dict(
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            default_root_dir=str(root),
            accelerator="cpu",
            devices=1,
        )
        options.update(kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.Trainer(**options)


LIGHTNING = Framework(
    "lightning",
    pl.LightningModule,
    pl.Trainer,
    pl.Callback,
    pl.callbacks.ModelCheckpoint,
    pl.callbacks.EarlyStopping,
    pl.loggers.CSVLogger,
)
EMBER = Framework(
    "ember",
    ember.Module,
    ember.Trainer,
    ember.Callback,
    ember.callbacks.ModelCheckpoint,
    ember.callbacks.EarlyStopping,
    ember.loggers.CSVLogger,
)
BOTH = (LIGHTNING, EMBER)


def data(n: int = 32, batch_size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def regression_module(fw: Framework) -> type:
    """A linear regression module class for ``fw`` (SGD, MSE), with validation and test steps."""

    class Regression(fw.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return F.mse_loss(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            self.log("val_loss", F.mse_loss(self(x), y))

        def test_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            self.log("test_loss", F.mse_loss(self(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Regression


def quiet_fit(trainer: Any, *args: Any, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(*args, **kwargs)


def checkpoint_view(cb: Any, folder: Path) -> dict[str, Any]:
    """What a user sees of a ModelCheckpoint: the files in ``folder`` (with each one's global_step)
    and the callback's bookkeeping, paths as file names."""
    name = lambda p: os.path.basename(p) if p else p  # noqa: E731
    files = {}
    if folder.exists():
        for p in sorted(folder.iterdir()):
            files[p.name] = torch.load(p, weights_only=False)["global_step"]
    return {
        "files": files,
        "best": name(cb.best_model_path),
        "best_score": None if cb.best_model_score is None else float(cb.best_model_score),
        "last": name(cb.last_model_path),
        "kth": name(cb.kth_best_model_path),
        "best_k": {name(k): float(v) for k, v in cb.best_k_models.items()},
        "current": None if cb.current_score is None else float(cb.current_score),
    }


def on_both(tmp_path: Path, scenario: Any) -> tuple[Any, Any]:
    """``scenario(fw, tmp_path / fw.name)`` on Lightning, then on Ember."""
    return tuple(scenario(fw, tmp_path / fw.name) for fw in BOTH)
