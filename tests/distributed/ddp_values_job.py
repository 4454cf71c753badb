"""``python ddp_values_job.py OUT``: a 2-process ``gloo`` fit (Ember starts the second process by
re-running this script) in which each rank logs values that depend on its rank. Every rank writes
what it saw in ``trainer.callback_metrics`` at every training step, and the ModelCheckpoint's
bookkeeping at the end, to ``OUT/values_rank<r>.json`` (checked by ``test_ddp_logged_values.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks.model_checkpoint import ModelCheckpoint

N_SAMPLES, PER_RANK_BATCH = 16, 2  # 8 samples a rank: 4 steps an epoch
STEP_KEYS = ("step_mean", "step_max", "step_sum_step", "local")


class RankDependent(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        rank, step = self.global_rank, self.global_step
        self.log("step_mean", float((rank + 1) * (step + 1)), on_step=True, on_epoch=False, sync_dist=True)
        self.log("step_max", torch.tensor(10.0 * rank - step), on_step=True, sync_dist=True, reduce_fx="max")
        self.log("step_sum", torch.tensor(rank + 1.0), on_step=True, on_epoch=True, sync_dist=True, reduce_fx="sum")
        self.log("local", float(rank), on_step=True)  # no sync_dist: each rank's own
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # not synced on purpose: the ranks disagree, and the checkpoint must follow rank zero
        self.log("val_score", float(10 * (self.global_rank + 1) - self.current_epoch))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Record(ember.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        metrics = trainer.callback_metrics
        self.steps.append({"global_step": trainer.global_step, **{k: float(metrics[k]) for k in STEP_KEYS}})


def loader() -> DataLoader:
    x = torch.randn(N_SAMPLES, 2, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=PER_RANK_BATCH)


def main(out: Path) -> None:
    record = Record()
    ckpt = ModelCheckpoint(dirpath=out / "ckpts", monitor="val_score", mode="min", save_top_k=1, save_last=True)
    trainer = ember.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=out, callbacks=[record, ckpt],
    )  # fmt: skip
    trainer.fit(RankDependent(), loader(), loader())
    result = {
        "rank": trainer.global_rank,
        "steps": record.steps,
        "step_sum_epoch": float(trainer.callback_metrics["step_sum_epoch"]),
        "best_model_path": ckpt.best_model_path,
        "best_model_score": None if ckpt.best_model_score is None else float(ckpt.best_model_score),
        "kth_best_model_path": ckpt.kth_best_model_path,
        "last_model_path": ckpt.last_model_path,
        "best_k_models": {k: float(v) for k, v in ckpt.best_k_models.items()},
        "files": sorted(p.name for p in (out / "ckpts").iterdir()),
    }
    (out / f"values_rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
