"""Distributed overhead: Ember's DDP Trainer against a hand-written DDP loop, 2 processes, gloo on CPU.

Both processes run, interleaved and for several rounds,
  (a) a hand-written loop: ``DistributedDataParallel`` over the model, a ``DataLoader`` with a
      ``DistributedSampler``, zero_grad / forward / backward / step;
  (b) ``ember.Trainer(strategy="ddp")`` with everything off (no logger, bar, summary, checkpoint),
      on the same unsplit ``DataLoader`` (Ember splits it over the processes itself);
  (c) like (b) with ``self.log("loss", loss, sync_dist=True)`` every step and gradient
      accumulation over 2 batches (``no_sync`` on the first);
on the models of ``benchmarks/overhead.py`` (a tiny MLP, where the framework and the all-reduce
dominate, and a small CNN), one CPU thread per process. The processes are started with
``ember.distributed.Parallel`` and the Trainer joins their process group. Rank zero prints steps/s
per process and the ratio to (a) in the same round: median and min-max over the rounds.

    python benchmarks/ddp.py [--rounds 11] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import ember
import ember.distributed as edist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import JOBS, BenchModule, make_loader


class AccumulatingModule(BenchModule):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("loss", loss, sync_dist=True)
        return loss


def run_raw(factory: Callable, loader: DataLoader) -> float:
    model = DistributedDataParallel(factory())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sampler = DistributedSampler(loader.dataset, shuffle=False)
    local = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler)
    model.train()
    dist.barrier()
    t0 = time.perf_counter()
    for x, y in local:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _trainer(**kwargs) -> ember.Trainer:
    return ember.Trainer(
        accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, **kwargs,
    )  # fmt: skip


def run_trainer_lean(factory: Callable, loader: DataLoader) -> float:
    module = BenchModule(factory(), log=False)
    trainer = _trainer()
    dist.barrier()
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - t0


def run_trainer_accumulate(factory: Callable, loader: DataLoader) -> float:
    module = AccumulatingModule(factory(), log=True)
    trainer = _trainer(accumulate_grad_batches=2)
    dist.barrier()
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - t0


VARIANTS: dict[str, Callable] = {
    "(a) hand-written DDP loop": run_raw,
    "(b) ember Trainer(strategy='ddp'), lean": run_trainer_lean,
    "(c) (b) + self.log(sync_dist=True) + accumulate 2": run_trainer_accumulate,
}


def bench(local_rank: int, rounds: int, quick: bool) -> None:
    torch.set_num_threads(1)
    rank = edist.get_rank()
    if rank == 0:
        print(f"torch {torch.__version__}, ember {ember.__version__}, {edist.get_world_size()} processes, "
              f"backend {edist.backend()}, threads/process {torch.get_num_threads()}, rounds {rounds}")  # fmt: skip
    for job, (factory, shape, batch, steps) in JOBS.items():
        steps = max(steps // 10, 20) if quick else steps // 2  # shorter runs, more rounds: less drift per pair
        loader = make_loader(shape, batch, steps * 2)  # a global batch of 2 x batch: `steps` steps per process
        for fn in VARIANTS.values():  # warm-up: the first DDP construction imports lazily (seconds)
            fn(factory, loader)
        rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
        ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for r in range(rounds):
            order = list(VARIANTS.items())
            if r % 2:
                order = order[:1] + order[1:][::-1]  # alternate order to spread drift
            seconds = {name: fn(factory, loader) for name, fn in order}
            slowest = {name: edist.all_reduce(s, "MAX") for name, s in seconds.items()}  # a step ends on all ranks
            for name, s in slowest.items():
                rates[name].append(steps / s)
                ratios[name].append(slowest["(a) hand-written DDP loop"] / s)
        if rank == 0:
            print(f"\n{job}: {steps} steps per process per run")
            print(f"  {'variant':52s} {'steps/s':>9s}  {'ratio to (a)':>12s}  {'min-max':>13s}")
            for name in VARIANTS:
                rr = ratios[name]
                print(
                    f"  {name:52s} {statistics.median(rates[name]):9.1f}  {statistics.median(rr):12.3f}  {min(rr):6.3f}-{max(rr):.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="fewer steps, for a smoke run")
    args = parser.parse_args()
    with edist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(bench, args.rounds, args.quick)


if __name__ == "__main__":
    main()
