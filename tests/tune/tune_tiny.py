"""A tiny regression model and data for the tuning tests, importable by class path
(``tune_tiny.TinyRegressor``) in-process and in ``ember tune`` subprocesses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ember


class TinyRegressor(ember.Module):
    """Linear regression with plain SGD: a small lr converges, a large one (>= 2) diverges."""

    def __init__(self, lr: float = 0.05, width: int = 1, fail: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Sequential(nn.Linear(3, width), nn.Linear(width, 1)) if width > 1 else nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.fail:
            raise RuntimeError("this configuration is broken on purpose")
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class TinyData(ember.DataModule):
    """``y = x @ [2, -3, 0.5] + 1.5`` plus a little noise; fixed seed."""

    def __init__(self, n: int = 128, batch_size: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, generator=g)
        y = x @ torch.tensor([[2.0], [-3.0], [0.5]]) + 1.5 + 0.1 * torch.randn(n, 1, generator=g)
        self.train_set = TensorDataset(x, y)
        self.val_set = TensorDataset(x[:32], y[:32])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=32)


CONFIG = """\
seed_everything: 0
trainer:
  max_epochs: {max_epochs}
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  log_every_n_steps: 1
model:
  class_path: tune_tiny.TinyRegressor
data:
  class_path: tune_tiny.TinyData
"""


def write_config(directory: Any, max_epochs: int = 3) -> str:
    """Write the tiny model's ``ember fit`` config into ``directory``; returns its path."""
    path = directory / "tiny.yaml"
    path.write_text(CONFIG.format(max_epochs=max_epochs))
    return str(path)
