"""Distributed data parallel (DDP) training from a plain ``python`` command, on 2 CPU processes.

``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` makes this process rank 0 and starts the
same command again as rank 1 (with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` set);
the processes talk over gloo. Each gets half of every epoch's samples (the loader keeps its own
shuffling), gradients are averaged at every step, ``sync_dist=True`` averages the logged validation
values over both processes, and only rank 0 writes logs and checkpoints and prints.

    python examples/ddp/main.py                  # 10 epochs
    python examples/ddp/main.py --fast           # 1 epoch of 8 batches, for the tests
    torchrun --nproc-per-node 2 examples/ddp/main.py --fast   # the same under torchrun: the Trainer joins

Everything the script does before ``trainer.fit`` runs in every process, so keep it cheap and
deterministic (the data split is seeded, so both processes see the same split).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ember  # noqa: E402
from examples.digits.data import DigitsDataModule  # noqa: E402


class MLP(ember.Module):
    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)

    def on_fit_start(self):
        # every process runs this; self.print prints on rank 0 only
        self.print(f"training on {self.trainer.world_size} processes")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fast", action="store_true", help="1 epoch of 8 batches (the test)")
    # not a temporary folder: rank 1 re-runs this command, and both processes must agree on the folder
    parser.add_argument("--out", default="runs/ddp", help="the run's folder (default: runs/ddp)")
    args = parser.parse_args(argv)
    ember.seed_everything(0)  # the same initial weights in every process (DDP also broadcasts rank 0's)
    trainer = ember.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1 if args.fast else args.epochs,
        limit_train_batches=8 if args.fast else 1.0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=args.out,
    )
    model = MLP()
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    # every process goes on from here with the same model; report once
    if trainer.is_global_zero:
        metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
        print(f"{trainer.world_size} processes, {trainer.global_step} optimizer steps each; {metrics}")
        print(f"checkpoint: {trainer.checkpoint_callback.best_model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
