"""A short table of the model's top-level layers and parameter counts, printed when fit starts."""

from __future__ import annotations

from typing import Any

from torch import nn

from ember.callbacks.callback import Callback


def _fmt(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def summarize(module: nn.Module, max_depth: int = 1) -> str:
    """The summary text: one row per submodule down to ``max_depth``, then the totals."""
    rows = [("", "Name", "Type", "Params")]
    for i, (name, sub) in enumerate(
        (n, m) for n, m in module.named_modules() if n and n.count(".") < max_depth
    ):
        rows.append((str(i), name, type(sub).__name__, _fmt(sum(p.numel() for p in sub.parameters()))))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    params = list(module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    lines += [
        "-" * len(lines[0]),
        f"{_fmt(trainable)} trainable params",
        f"{_fmt(total - trainable)} non-trainable params",
        f"{_fmt(total)} total params",
        f"{sum(p.numel() * p.element_size() for p in params) / 1e6:.3f} MB total parameter size",
    ]
    return "\n".join(lines)


class ModelSummary(Callback):
    """Prints :func:`summarize` of the model on rank zero when fitting starts."""

    def __init__(self, max_depth: int = 1) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
            raise ValueError(f"max_depth must be a non-negative integer, got {max_depth!r}")
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Any, module: Any) -> None:
        if self.max_depth and trainer.is_global_zero:
            print(summarize(module, self.max_depth))
