"""Loading a ~1 GB model from a checkpoint: ``Module.load_from_checkpoint`` (meta-device
construction + ``load_state_dict(assign=True)``) against the naive way (construct with random
initialisation, ``torch.load``, ``load_state_dict``) and against ``torch.load(path, mmap=True)`` alone.

Run by hand::

    .venv/bin/python benchmarks/load_checkpoint.py            # ~1 GB, 3 repeats
    .venv/bin/python benchmarks/load_checkpoint.py --layers 4 --width 2048 --repeats 5

The checkpoint is written once to a temporary directory (so it is in the page cache: the numbers
are CPU and memory cost, not disk speed) and deleted at the end. Target: load_from_checkpoint takes
at most 0.5 of the naive time.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import ember
from ember.checkpoint import new_checkpoint, save_checkpoint


class Stack(ember.Module):
    """``layers`` Linear(width, width) layers: 4 * layers * width^2 bytes of float32 weights."""

    def __init__(self, layers: int = 16, width: int = 4096) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def naive(path: Path, layers: int, width: int) -> nn.Module:
    model = Stack(layers, width)  # random initialisation, then overwritten
    model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    return model


def ember_load(path: Path, layers: int, width: int) -> nn.Module:
    return Stack.load_from_checkpoint(path)


def mmap_alone(path: Path, layers: int, width: int) -> dict:
    return torch.load(path, mmap=True, weights_only=True)


def timed(fn: Callable[[], object], repeats: int, touch: bool = False) -> list[float]:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        if touch:  # read every weight once (mmap'd pages are only read when used)
            params = out.parameters() if isinstance(out, nn.Module) else out["state_dict"].values()
            for p in params:
                p.sum()
        times.append(time.perf_counter() - t0)
        del out
    gc.collect()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size_gb = args.layers * (args.width * args.width + args.width) * 4 / 1e9
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model: {args.layers} x Linear({args.width}) = {size_gb:.2f} GB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.ckpt"
        torch.manual_seed(0)
        model = Stack(args.layers, args.width)
        save_checkpoint(
            {**new_checkpoint(), "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path
        )
        reference = {k: v.clone() for k, v in list(model.state_dict().items())[:2]}
        del model
        gc.collect()
        loaded = ember_load(path, args.layers, args.width)  # warm-up, and check it is right
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.items())
        del loaded, reference
        gc.collect()
        results = {}
        for name, fn, touch in (
            ("naive: construct + torch.load + load_state_dict", naive, False),
            ("Module.load_from_checkpoint", ember_load, False),
            ("Module.load_from_checkpoint + read every weight", ember_load, True),
            ("torch.load(mmap=True) alone", mmap_alone, False),
            ("torch.load(mmap=True) + read every weight", mmap_alone, True),
        ):
            times = timed(lambda fn=fn: fn(path, args.layers, args.width), args.repeats, touch)
            results[name] = statistics.median(times)
            print(f"  {name:<52} median {results[name]:7.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times)})")
        base = results["naive: construct + torch.load + load_state_dict"]
        print("ratios to naive (target for load_from_checkpoint: <= 0.50):")
        for name, t in results.items():
            print(f"  {name:<52} {t / base:5.2f}")


if __name__ == "__main__":
    main()
