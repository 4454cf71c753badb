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

It also counts the Ember Python function calls of one steady-state training step for every
variant: ``sys.setprofile`` "call" events (generator resumptions included) of functions whose code
lives under the ``ember`` package directory, on the training thread, over the steps
``--calls-from`` + 1 .. ``--calls-from`` + ``--calls-steps`` of a separate short run, divided by the
number of steps. The profiler is switched on and off by the benchmark's own step code at the same
point of two steps, so the window is whole steps and no Ember handler or callback is added to the
run being counted. The user's code (the benchmark's ``training_step``, the Engine's process
function) is not counted; what it calls in Ember (``self.log``) is. Periodic work outside the window
(the default variant's logger write every 50 steps, the clock-driven progress bar redraw, which the
counting run turns down so the count does not depend on speed) and work a logger hands to its
thread or defers to its flush are not counted. The count depends on the Python version
(comprehensions and generator expressions are separate calls before 3.12).

    python benchmarks/overhead.py [--rounds 7] [--quick] [--job MLP]
    python benchmarks/overhead.py --calls-only [--calls-detail] [--job MLP]   # just the call counts, in seconds
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

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


class ProbedBenchModule(BenchModule):
    """BenchModule that calls ``probe()`` first in every training step (for counting calls only)."""

    def __init__(self, net: nn.Module, log: bool, probe: Callable[[], None]) -> None:
        super().__init__(net, log)
        self.probe = probe

    def training_step(self, batch, batch_idx):
        self.probe()
        return super().training_step(batch, batch_idx)


def bench_module(net: nn.Module, log: bool, probe: Callable[[], None] | None) -> BenchModule:
    return BenchModule(net, log) if probe is None else ProbedBenchModule(net, log, probe)


def _probed(loader: DataLoader, probe: Callable[[], None]):
    for batch in loader:
        probe()
        yield batch


def run_raw(factory: Callable, loader: DataLoader, probe: Callable[[], None] | None = None) -> float:
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    batches = loader if probe is None else _probed(loader, probe)
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def run_engine(factory: Callable, loader: DataLoader, probe: Callable[[], None] | None = None) -> float:
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

    if probe is not None:
        plain_step = step

        def step(engine, batch):
            probe()
            return plain_step(engine, batch)

    engine = Engine(step)
    t0 = time.perf_counter()
    engine.run(loader, max_epochs=1)
    return time.perf_counter() - t0


def run_trainer_lean(factory: Callable, loader: DataLoader, probe: Callable[[], None] | None = None) -> float:
    module = bench_module(factory(), False, probe)
    trainer = ember.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - t0


def _run_trainer_default(
    factory: Callable, loader: DataLoader, logger_factory: Callable, log_every: int, probe: Callable[[], None] | None
) -> float:
    module = bench_module(factory(), True, probe)
    # counting: the bar's clock-driven redraw (10 Hz) would land in the window or not depending on speed
    bar_hz = 10.0 if probe is None else 1e-6
    with open(os.devnull, "w") as devnull, tempfile.TemporaryDirectory() as tmp:
        trainer = ember.Trainer(
            max_epochs=1, accelerator="cpu", default_root_dir=tmp, logger=logger_factory(tmp),
            callbacks=[ProgressBar(refresh_rate_hz=bar_hz, file=devnull, force=True)], enable_model_summary=False,
            log_every_n_steps=log_every,
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer.fit(module, loader)
        return time.perf_counter() - t0


def run_trainer_default(factory: Callable, loader: DataLoader, probe: Callable[[], None] | None = None) -> float:
    return _run_trainer_default(factory, loader, lambda tmp: CSVLogger(tmp), 50, probe)


def run_trainer_tensorboard(factory: Callable, loader: DataLoader, probe: Callable[[], None] | None = None) -> float:
    from ember.loggers import TensorBoardLogger

    return _run_trainer_default(factory, loader, lambda tmp: TensorBoardLogger(tmp), 1, probe)


# ---------------------------------------------------------------------- Ember calls per step

EMBER_DIR = os.path.realpath(os.path.dirname(ember.__file__))


@dataclass
class CallCount:
    """The Ember function calls made over ``steps`` steady-state steps, per code object."""

    steps: int
    by_code: dict[CodeType, int]

    @property
    def total(self) -> int:
        return sum(self.by_code.values())

    @property
    def per_step(self) -> float:
        return self.total / self.steps

    def per_function(self) -> list[tuple[str, float]]:
        """(``path:line qualname``, calls per step), most called first."""
        rows = []
        for code, n in self.by_code.items():
            where = os.path.relpath(os.path.realpath(code.co_filename), os.path.dirname(EMBER_DIR))
            rows.append((f"{where}:{code.co_firstlineno} {code.co_qualname}", n / self.steps))
        return sorted(rows, key=lambda r: (-r[1], r[0]))


class CallCounter:
    """A probe the benchmark's step code calls once per step, at the same point of every step: it
    switches the profiler on at call ``start + 1`` and off at call ``start + steps + 1``, so the
    window holds exactly ``steps`` whole steps."""

    def __init__(self, start: int, steps: int) -> None:
        self.start, self.steps = start, steps
        self.ticks = 0
        self.by_code: Counter[CodeType] = Counter()
        self._ember: dict[CodeType, bool] = {}
        self._prefix = EMBER_DIR + os.sep

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":  # c_call, return, ...
            return
        code = frame.f_code
        ours = self._ember.get(code)
        if ours is None:
            ours = self._ember[code] = os.path.realpath(code.co_filename).startswith(self._prefix)
        if ours:
            self.by_code[code] += 1

    def __call__(self) -> None:
        self.ticks += 1
        if self.ticks == self.start + 1:
            sys.setprofile(self._profile)
        elif self.ticks == self.start + self.steps + 1:
            sys.setprofile(None)


def count_calls(
    run: Callable, factory: Callable, shape: tuple[int, ...], batch: int, start: int = 20, steps: int = 10
) -> CallCount:
    """Ember calls of ``run`` (one of the ``run_*`` variants) over training steps ``start + 1`` ..
    ``start + steps`` of a one-epoch run on ``start + steps + 5`` batches (the epoch's end stays
    outside the window). The cyclic GC is off during the run so no finalizer lands in the window."""
    if start < 1 or steps < 1:
        raise ValueError(f"start and steps must be positive, got {start}, {steps}")
    loader = make_loader(shape, batch, start + steps + 5)
    counter = CallCounter(start, steps)
    previous = sys.getprofile()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        run(factory, loader, probe=counter)
    finally:
        sys.setprofile(previous)
        if gc_was_enabled:
            gc.enable()
    if counter.ticks <= start + steps:
        raise RuntimeError(f"the run made {counter.ticks} steps; the window needs {start + steps + 1}")
    return CallCount(steps, dict(counter.by_code))


def fmt_calls(count: CallCount) -> str:
    n = count.per_step
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"


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
    parser.add_argument("--job", default="", help="run only the jobs whose name contains this (case-insensitive)")
    parser.add_argument("--calls-only", action="store_true", help="print only the Ember calls per step (fast)")
    parser.add_argument("--calls-detail", action="store_true", help="also list the calls per step by function")
    parser.add_argument("--calls-from", type=int, default=20, help="steps before the counting window (warm-up)")
    parser.add_argument("--calls-steps", type=int, default=10, help="steps in the counting window")
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
    print(
        f"torch {torch.__version__}, ember {ember.__version__} ({EMBER_DIR}), python {sys.version.split()[0]}, "
        f"threads {torch.get_num_threads()}, rounds {args.rounds}"
    )
    print(
        f"Ember calls/step: steps {args.calls_from + 1}-{args.calls_from + args.calls_steps} of a run, sys.setprofile"
    )
    jobs = {job: spec for job, spec in JOBS.items() if args.job.lower() in job.lower()}
    if not jobs:
        parser.error(f"--job {args.job!r} matches none of: {', '.join(JOBS)}")
    for job, (factory, shape, batch, steps) in jobs.items():
        counts = {
            name: count_calls(fn, factory, shape, batch, args.calls_from, args.calls_steps)
            for name, fn in variants.items()
        }
        if args.calls_only:
            print(f"\n{job}")
            print(f"  {'variant':52s} {'Ember calls/step':>16s}")
            for name, count in counts.items():
                print(f"  {name:52s} {fmt_calls(count):>16s}")
                if args.calls_detail:
                    for where, n in count.per_function():
                        print(f"      {n:6.1f}  {where}")
            continue
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
        print(f"  {'variant':52s} {'steps/s':>9s}  {'ratio to (a)':>12s}  {'min-max':>13s}  {'Ember calls/step':>16s}")
        for name in variants:
            rr = ratios[name]
            print(
                f"  {name:52s} {statistics.median(rates[name]):9.1f}  {statistics.median(rr):12.3f}  "
                f"{min(rr):6.3f}-{max(rr):.3f}  {fmt_calls(counts[name]):>16s}"
            )
            if args.calls_detail:
                for where, n in counts[name].per_function():
                    print(f"      {n:6.1f}  {where}")
    if args.calls_only:
        return
    cost = import_cost()
    print(f"\nimport ember beyond import torch: {cost:+.3f} s (median of 5 fresh processes each)")


if __name__ == "__main__":
    main()
