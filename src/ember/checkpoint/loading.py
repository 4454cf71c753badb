"""Rebuilding a module from a checkpoint without paying for a random initialisation.

The module is constructed on the ``meta`` device (no memory, no init kernels), then the saved
weights are assigned in place (``load_state_dict(..., assign=True)``). A module that computes a
non-persistent buffer in ``__init__`` (not in the state dict) would keep it on ``meta``; such a
module is constructed again normally, so it always comes out right. No global mode is left
active, so ``torch.compile``d submodules behave as usual; keys saved from a compiled submodule
(``enc._orig_mod.w``) load into an uncompiled one (``enc.w``) and back.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch

from ember.checkpoint.format import load_checkpoint
from ember.checkpoint.io import CheckpointError

_COMPILED = "_orig_mod."


def adapt_state_dict(module: torch.nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename keys across the ``_orig_mod.`` prefix that ``torch.compile`` adds, to match ``module``."""
    wanted = module.state_dict().keys()
    by_plain = {k.replace(_COMPILED, ""): k for k in wanted}
    out = {}
    for key, value in state_dict.items():
        if key in by_plain.values():
            out[key] = value
        else:
            out[by_plain.get(key.replace(_COMPILED, ""), key)] = value
    return out


def _init_kwargs(cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(hparams)
    return {k: v for k, v in hparams.items() if k in params}


def _has_meta(module: torch.nn.Module) -> bool:
    return any(t.is_meta for t in module.parameters()) or any(t.is_meta for t in module.buffers())


def _target_device(map_location: Any, state_dict: dict[str, Any]) -> torch.device | None:
    """Where the weights were mapped to: ``map_location`` itself, or (a dict or a function) where
    the loaded tensors are."""
    if isinstance(map_location, (str, torch.device)):
        return torch.device(map_location)
    return next((t.device for t in state_dict.values() if isinstance(t, torch.Tensor)), None)


def _ties(module: torch.nn.Module) -> list[tuple[str, str]]:
    """``(name, first_name)`` for every parameter that is the same object as an earlier one (tied weights)."""
    first: dict[int, str] = {}
    ties = []
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first:
            ties.append((name, first[id(param)]))
        else:
            first[id(param)] = name
    return ties


def _retie(module: torch.nn.Module, ties: list[tuple[str, str]]) -> None:
    # load_state_dict(assign=True) gives each name its own Parameter: make the tied ones one object again
    for name, source in ties:
        owner, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(owner), leaf, module.get_parameter(source))


def _load_weights(model: torch.nn.Module, state_dict: dict[str, Any], strict: bool, name: str, assign: bool = False) -> None:
    try:
        model.load_state_dict(adapt_state_dict(model, state_dict), strict=strict, assign=assign)
    except RuntimeError as err:  # missing or unexpected keys, shapes that differ
        raise CheckpointError(f"{name!r} does not fit {type(model).__name__}: {err}") from None


def load_module_from_checkpoint(
    cls: type,
    checkpoint_path: str | os.PathLike,
    map_location: Any = None,
    strict: bool = True,
    **hparam_overrides: Any,
) -> Any:
    """``cls`` built from the checkpoint's hyperparameters (``hparam_overrides`` win) with its weights."""
    name = os.fspath(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, map_location=map_location if map_location is not None else "cpu")
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"{name!r} holds no model weights ('state_dict')")
    kwargs = _init_kwargs(cls, {**checkpoint.get("hyper_parameters", {}), **hparam_overrides})
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise CheckpointError(
            f"{name!r} cannot build {cls.__name__}: {err} (its saved hyperparameters are {sorted(kwargs)}); "
            "pass the missing ones to load_from_checkpoint as keyword arguments"
        ) from None
    state_dict = checkpoint["state_dict"]
    with torch.device("meta"):
        model = cls(**kwargs)
    ties = _ties(model)
    _load_weights(model, state_dict, strict, name, assign=True)
    _retie(model, ties)
    if _has_meta(model):  # something __init__ computed is not in the checkpoint: build it for real
        model = cls(**kwargs)
        device = _target_device(map_location, state_dict)
        if device is not None:
            model.to(device)
        _load_weights(model, state_dict, strict, name)
    example = getattr(model, "example_input_array", None)
    if isinstance(example, torch.Tensor) and example.is_meta:
        # built under the meta device: keep its shape and dtype (what summaries and exports use)
        model.example_input_array = torch.zeros(example.shape, dtype=example.dtype)
    hook = getattr(model, "on_load_checkpoint", None)
    if callable(hook):
        hook(checkpoint)
    return model
