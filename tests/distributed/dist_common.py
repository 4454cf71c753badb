"""The tiny model, data and single-process references shared by the distributed tests and the
jobs they launch (``dist_job.py``)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ember

N_TRAIN = 64  # divides evenly over 2 processes and a global batch of 8: DDP reproduces 1 process
N_VAL = 13  # odd on purpose: evaluation shards are not padded, so synced metrics stay exact
GLOBAL_BATCH = 8


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[2.0, -3.0, 0.5]]).T + 1.5 + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def train_loader(batch_size: int, shuffle: bool = True) -> DataLoader:
    """Shuffled with its own seeded generator: the order the distributed sampler must keep."""
    generator = torch.Generator().manual_seed(7) if shuffle else None
    return DataLoader(dataset(N_TRAIN, 0), batch_size=batch_size, shuffle=shuffle, generator=generator)


def val_loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(dataset(N_VAL, 1), batch_size=batch_size)


class Net(ember.Module):
    """A 3-8-1 MLP on a regression task, SGD with momentum (optimizer state to checkpoint)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        rank = self.trainer.global_rank if self._trainer is not None else 0
        if self.fail_at is not None and rank == 1 and self.trainer.global_step == self.fail_at:
            raise RuntimeError(f"boom on rank {rank} at step {self.fail_at}")
        kill_epoch = os.environ.get("EMBER_TEST_KILL_EPOCH")
        if (
            kill_epoch is not None
            and rank == 1
            and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            and self.trainer.current_epoch == int(kill_epoch)
            and batch_idx == 2
        ):
            os.kill(os.getpid(), 9)  # SIGKILL: no handler, no cleanup, as an OOM kill would do
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def make_model(**kwargs: Any) -> Net:
    torch.manual_seed(0)
    return Net(**kwargs)


def trainer_options(root: Any, **kwargs: Any) -> dict[str, Any]:
    options = dict(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    options.update(kwargs)
    return options


def reference(root: Any, epochs: int = 2, **kwargs: Any) -> tuple[dict[str, torch.Tensor], ember.Trainer]:
    """The single-process run on the global batch: what every distributed run must reproduce."""
    model = make_model()
    trainer = ember.Trainer(**trainer_options(root, max_epochs=epochs, **kwargs))
    trainer.fit(model, train_loader(GLOBAL_BATCH), val_loader())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, trainer
