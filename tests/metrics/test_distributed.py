"""Metrics over two real processes (gloo): every rank ends with the value of the whole data set."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from ember.engine import Engine, Events

Y_PRED = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2])


def worker(rank: int, world: int, directory: str) -> None:
    from ember.metrics import F1, Accuracy, Loss, RunningAverage

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{directory}/store", rank=rank, world_size=world)
    try:
        # rank 0: samples 0-7 in batches of 4; rank 1: samples 8-11 in batches of 2 (uneven on purpose)
        size = 4 if rank == 0 else 2
        start = 0 if rank == 0 else 8
        batches = [(Y_PRED[start + i : start + i + size], Y[start + i : start + i + size]) for i in (0, size)]
        engine = Engine(lambda engine, batch: batch)
        Accuracy().attach(engine, "acc")
        F1().attach(engine, "f1")
        Loss(F.cross_entropy, batch_size=len).attach(engine, "nll")
        RunningAverage(output_transform=lambda out: torch.tensor(float(rank)), alpha=0.5).attach(engine, "avg_rank")
        seen = []
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.metrics["avg_rank"])))
        engine.run(batches, max_epochs=1)
        out = {k: engine.state.metrics[k] for k in ("acc", "f1", "nll")}
        out["avg_rank"] = seen
        with open(f"{directory}/rank{rank}.json", "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_metrics_are_synced_across_processes(tmp_path):
    from torchmetrics.functional.classification import multiclass_f1_score

    mp.start_processes(worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")  # no re-imports
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    data_pred, data_y = Y_PRED, Y
    expected_acc = float((data_pred.argmax(1) == data_y).float().mean())
    expected_f1 = float(multiclass_f1_score(data_pred, data_y, num_classes=3, average="macro"))
    expected_nll = float(F.cross_entropy(data_pred, data_y))
    for result in results:
        assert abs(result["acc"] - expected_acc) < 1e-6
        assert abs(result["f1"] - expected_f1) < 1e-6
        assert abs(result["nll"] - expected_nll) < 1e-5
        assert result["avg_rank"] == [0.5, 0.5]  # the mean of ranks 0 and 1, each step
