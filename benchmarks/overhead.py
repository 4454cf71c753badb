"""Framework overhead: Ember's Engine and Trainer against a hand-written PyTorch loop.

Runs the same job as
  (a) a hand-written loop,
  (b) ember.engine.Engine with the same step as process function,
  (c) ember.Trainer with everything off (no logger, progress bar, summary, sanity check),
  (d) ember.Trainer as users run it: progress bar on (forced, drawn to /dev/null),
      ``self.log("loss", loss, prog_bar=True)`` every step, CSV logger,
  (e) like (d) with a TensorBoard logger and log_every_n_steps=1, when tensorboard is installed,
interleaved in one process for several rounds, on a tiny MLP (framework overhead dominates) and a
small CNN, with ``torch.set_num_threads(1)``. Prints steps/s and the ratio to (a) in the same
round: median and min-max over the rounds. Also prints the cost of ``import ember`` beyond
``import torch``.

    python benchmarks/overhead.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import ProgressBar
from ember.engine import Engine
from ember.loggers import CSVLogger


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


JOBS = {
    # name: (model factory, input shape, batch size, steps per run)
    "tiny MLP 32-64-10, batch 32": (tiny_mlp, (32,), 32, 3000),
    "small CNN 28x28, batch 64": (small_cnn, (1, 28, 28), 64, 100),
}


def make_loader(shape: tuple[int, ...], batch: int, steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * steps, *shape, generator=g)
    y = torch.randint(0, 10, (batch * steps,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


class BenchModule(ember.Module):
    def __init__(self, net: nn.Module, log: bool) -> None:
        super().__init__()
        self.net = net
        self.log_loss = log

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if self.log_loss:
            self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def run_raw(factory: Callable, loader: DataLoader) -> float:
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def run_engine(factory: Callable, loader: DataLoader) -> float:
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()

    def step(engine, batch):
        x, y = batch
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    engine = Engine(step)
    t0 = time.perf_counter()
    engine.run(loader, max_epochs=1)
    return time.perf_counter() - t0


def run_trainer_lean(factory: Callable, loader: DataLoader) -> float:
    module = BenchModule(factory(), log=False)
    trainer = ember.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - t0


def _run_trainer_default(factory: Callable, loader: DataLoader, logger_factory: Callable, log_every: int) -> float:
    module = BenchModule(factory(), log=True)
    with open(os.devnull, "w") as devnull, tempfile.TemporaryDirectory() as tmp:
        trainer = ember.Trainer(
            max_epochs=1, accelerator="cpu", default_root_dir=tmp, logger=logger_factory(tmp),
            callbacks=[ProgressBar(file=devnull, force=True)], enable_model_summary=False,
            log_every_n_steps=log_every,
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer.fit(module, loader)
        return time.perf_counter() - t0


def run_trainer_default(factory: Callable, loader: DataLoader) -> float:
    return _run_trainer_default(factory, loader, lambda tmp: CSVLogger(tmp), 50)


def run_trainer_tensorboard(factory: Callable, loader: DataLoader) -> float:
    from ember.loggers import TensorBoardLogger

    return _run_trainer_default(factory, loader, lambda tmp: TensorBoardLogger(tmp), 1)


def import_cost(repeats: int = 5) -> float:
    """Median extra wall time of ``import ember`` over ``import torch``, in fresh processes."""

    def best(code: str) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return best("import torch, ember") - best("import torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer steps, for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants: dict[str, Callable] = {
        "(a) hand-written loop": run_raw,
        "(b) ember Engine": run_engine,
        "(c) ember Trainer, lean": run_trainer_lean,
        "(d) ember Trainer, default + self.log(prog_bar)": run_trainer_default,
    }
    try:
        import tensorboard  # noqa: F401

        variants["(e) (d) + TensorBoard, log_every_n_steps=1"] = run_trainer_tensorboard
    except ImportError:
        pass
    print(f"torch {torch.__version__}, ember {ember.__version__}, threads {torch.get_num_threads()}, rounds {args.rounds}")
    for job, (factory, shape, batch, steps) in JOBS.items():
        if args.quick:
            steps = max(steps // 10, 10)
        loader = make_loader(shape, batch, steps)
        for fn in variants.values():  # warm-up: first optimizer, lazy imports
            fn(factory, loader)
        rates: dict[str, list[float]] = {name: [] for name in variants}
        ratios: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants.items())
            if r % 2:
                order = order[:1] + order[1:][::-1]  # alternate order to spread drift
            round_rates = {name: steps / fn(factory, loader) for name, fn in order}
            for name, rate in round_rates.items():
                rates[name].append(rate)
                ratios[name].append(rate / round_rates["(a) hand-written loop"])
        print(f"\n{job}: {steps} steps per run")
        print(f"  {'variant':52s} {'steps/s':>9s}  {'ratio to (a)':>12s}  {'min-max':>13s}")
        for name in variants:
            rr = ratios[name]
            print(f"  {name:52s} {statistics.median(rates[name]):9.1f}  {statistics.median(rr):12.3f}  {min(rr):6.3f}-{max(rr):.3f}")
    cost = import_cost()
    print(f"\nimport ember beyond import torch: {cost:+.3f} s (median of 5 fresh processes each)")


if __name__ == "__main__":
    main()
