"""A model whose validation metric follows a script (one value per epoch), for checkpoint and
early-stopping tests that must know exactly which epoch is best."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember


class Scripted(ember.Module):
    """Logs ``val_loss = values[current_epoch]`` (and ``val_acc`` = its negation) each validation."""

    def __init__(self, values: list[float], lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        value = self.hparams["values"][self.current_epoch]
        self.log("val_loss", torch.tensor(float(value)))
        self.log("val_acc", torch.tensor(-float(value)))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def data(n: int = 16, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def trainer(root: Any, **kwargs: Any) -> ember.Trainer:
    options: dict[str, Any] = dict(
        enable_progress_bar=False, enable_model_summary=False, logger=False, default_root_dir=root,
        num_sanity_val_steps=0,
    )  # fmt: skip
    options.update(kwargs)
    return ember.Trainer(**options)
