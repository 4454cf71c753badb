"""A short table of the model's top-level layers and parameter counts, printed when fit starts; with
the layers' input and output sizes when the module has an ``example_input_array`` (as Lightning)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ember.callbacks.callback import Callback
from ember.tree import tree_map

UNKNOWN_SIZE = "?"


def _fmt(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def shape_of(value: Any) -> Any:
    """Lightning's size notation: a tensor's shape as a list, a list/tuple of them as a nested list,
    anything else ``"?"``."""
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [shape_of(v) for v in value]
    return UNKNOWN_SIZE


def layer_sizes(
    module: nn.Module, layers: dict[str, nn.Module], example: Any, precision: Any = None
) -> dict[str, tuple[Any, Any]]:
    """``{name: (in size, out size)}`` of ``layers`` (submodules of ``module``) when ``example`` goes
    through ``module`` (on its parameters' device, in eval mode, without gradients, under
    ``precision``'s input conversion and autocast when given; each submodule's own train/eval mode is
    put back). A layer that is called several times reports its first call; one not called is missing."""
    sizes: dict[str, tuple[Any, Any]] = {}

    def recorder(name: str) -> Any:
        def hook(layer: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if name not in sizes:
                inputs = (*args, *kwargs.values())
                sizes[name] = (shape_of(inputs[0] if len(inputs) == 1 else inputs), shape_of(output))

        return hook

    handles = [
        layer.register_forward_hook(recorder(name), with_kwargs=True)
        for name, layer in layers.items()
        if not isinstance(layer, torch.jit.ScriptModule)
    ]
    device = next((p.device for p in module.parameters()), None)
    if device is not None:
        example = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, example)
    forward = module
    if precision is not None:
        example = precision.convert_input(example)
        forward = precision.wrap(module)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            if isinstance(example, (list, tuple)):
                forward(*example)
            elif isinstance(example, dict):
                forward(**example)
            else:
                forward(example)
    finally:
        for m, training in modes:
            m.training = training
        for h in handles:
            h.remove()
    return sizes


def summarize(module: nn.Module, max_depth: int = 1, precision: Any = None) -> str:
    """The summary text: one row per submodule down to ``max_depth`` (-1: all depths, as Lightning; with ``In sizes`` and
    ``Out sizes`` when ``module.example_input_array`` is set; ``precision``: the Trainer's, for
    that forward pass), then the totals. An example that the model cannot run gives ``?`` sizes
    and a warning: the summary never stops a run."""
    layers = {n: m for n, m in module.named_modules() if n and (max_depth == -1 or n.count(".") < max_depth)}
    rows = [["", "Name", "Type", "Params"]]
    for i, (name, sub) in enumerate(layers.items()):
        rows.append([str(i), name, type(sub).__name__, _fmt(sum(p.numel() for p in sub.parameters()))])
    example = getattr(module, "example_input_array", None)
    if example is not None:
        try:
            sizes = layer_sizes(module, layers, example, precision)
        except Exception as err:
            warnings.warn(f"model summary: example_input_array did not go through the model: {err}", stacklevel=2)
            sizes = {}
        rows[0] += ["In sizes", "Out sizes"]
        for row, name in zip(rows[1:], layers):
            in_size, out_size = sizes.get(name, (UNKNOWN_SIZE, UNKNOWN_SIZE))
            row += [str(in_size), str(out_size)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
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
    """Prints :func:`summarize` of the model on rank zero when fitting starts (``max_depth=0``: nothing;
    ``-1``: every submodule, at all depths, as Lightning).
    With ``example_input_array`` set on the module, the example goes through the model once, in
    eval mode and without gradients, to show each layer's input and output sizes."""

    def __init__(self, max_depth: int = 1) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"max_depth must be an integer >= -1 (-1: all depths), got {max_depth!r}")
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.max_depth and trainer.is_global_zero:
            print(summarize(pl_module, self.max_depth, getattr(trainer, "precision_plugin", None)))
