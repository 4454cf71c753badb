"""Rebuilding a module from a checkpoint without paying for a random initialisation.

The module is constructed on the ``meta`` device (no memory, no init kernels), then the saved
weights are assigned in place (``load_state_dict(..., assign=True)``). A module with a
non-persistent buffer (not in the state dict) is constructed normally, and so is one whose weights
``strict=False`` left unset, so it always comes out right. No global mode is left
active, so ``torch.compile``d submodules behave as usual; keys saved from a compiled submodule
(``enc._orig_mod.w``) load into an uncompiled one (``enc.w``) and back.
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
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


def _load_weights(model: torch.nn.Module, state_dict: dict[str, Any], strict: bool, name: str, assign: bool = False) -> Any:
    try:
        return model.load_state_dict(adapt_state_dict(model, state_dict), strict=strict, assign=assign)
    except RuntimeError as err:  # missing or unexpected keys, shapes that differ
        raise CheckpointError(f"{name!r} does not fit {type(model).__name__}: {err}") from None


def _copy_containers(obj: Any) -> Any:
    """``obj`` with its dicts and lists copied (tensors shared; a state dict keeps its ``_metadata``)."""
    if isinstance(obj, dict):
        out = copy.copy(obj)
        for key, value in obj.items():
            out[key] = _copy_containers(value)
        return out
    if isinstance(obj, list):
        return [_copy_containers(v) for v in obj]
    return obj


def _build(cls: type, kwargs: dict[str, Any]) -> torch.nn.Module:
    """``cls(**kwargs)``, then its ``configure_model`` (as Lightning: layers built there get the weights too)."""
    model = cls(**kwargs)
    configure_model = getattr(model, "configure_model", None)
    if callable(configure_model):
        configure_model()
    return model


def _unset_tensors(model: torch.nn.Module, state_dict: dict[str, Any]) -> bool:
    """Whether loading ``state_dict`` would leave some of ``model``'s tensors unset: non-persistent
    buffers (never in a checkpoint), or weights the checkpoint lacks (``strict=False``)."""
    saved = model.state_dict().keys()
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    return any(n not in saved for n in names) or not saved <= adapt_state_dict(model, state_dict).keys()


def _restore(model: torch.nn.Module, checkpoint: dict[str, Any], strict: bool, name: str, assign: bool) -> Any:
    """As Lightning: the module's ``on_load_checkpoint`` (it may still edit the checkpoint, e.g. rename
    weights), then the weights; returns ``load_state_dict``'s missing/unexpected keys."""
    hook = getattr(model, "on_load_checkpoint", None)
    if callable(hook):
        hook(checkpoint)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{name!r} holds no model weights ('state_dict') after on_load_checkpoint()")
    ties = _ties(model)
    keys = _load_weights(model, checkpoint["state_dict"], strict, name, assign=assign)
    if assign:
        _retie(model, ties)
    return keys


def load_module_from_checkpoint(
    cls: type,
    checkpoint_path: str | os.PathLike,
    map_location: Any = None,
    strict: bool = True,
    **hparam_overrides: Any,
) -> Any:
    """``cls`` built from the checkpoint's hyperparameters (``hparam_overrides`` win) with its weights.

    As Lightning: ``configure_model`` (when defined) runs after construction and the module's
    ``on_load_checkpoint`` before the weights are loaded; with ``strict=False`` missing and unexpected
    keys are warned about. The module is built on the ``meta`` device unless loading would leave some
    of its tensors unset (non-persistent buffers, weights the checkpoint lacks); then, or when its
    ``on_load_checkpoint`` removes weights with ``strict=False``, it is built normally (in the last
    case again, and its ``on_load_checkpoint`` sees a fresh copy of the checkpoint, tensors shared).
    """
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
    device = _target_device(map_location, checkpoint["state_dict"])
    with torch.device("meta"):
        model = _build(cls, kwargs)
    keys = None
    if not _unset_tensors(model, checkpoint["state_dict"]):
        pristine = _copy_containers(checkpoint) if not strict else checkpoint  # strict: no second try needed
        keys = _restore(model, checkpoint, strict, name, assign=True)
        checkpoint = pristine
    if keys is None or _has_meta(model):  # something the checkpoint does not hold: build it for real
        model = _build(cls, kwargs)
        if device is not None:
            model.to(device)
        keys = _restore(model, checkpoint, strict, name, assign=False)
    if not strict:
        for what, found in (("in the model but not in the checkpoint", keys.missing_keys),
                            ("in the checkpoint but not in the model", keys.unexpected_keys)):  # fmt: skip
            if found:
                warnings.warn(f"load_from_checkpoint({name!r}, strict=False): keys {what}: {found}", stacklevel=3)
    example = getattr(model, "example_input_array", None)
    if isinstance(example, torch.Tensor) and example.is_meta:
        # built under the meta device: keep its shape and dtype (what summaries and exports use)
        model.example_input_array = torch.zeros(example.shape, dtype=example.dtype)
    return model


def load_datamodule_from_checkpoint(cls: type, checkpoint_path: str | os.PathLike, **overrides: Any) -> Any:
    """``cls`` built from the checkpoint's ``datamodule_hyper_parameters`` (``overrides`` win), as
    Lightning's ``LightningDataModule.load_from_checkpoint``, then given the state its ``state_dict()``
    saved there (``checkpoint["datamodule"]``) when there is one."""
    name = os.fspath(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, map_location="cpu")
    kwargs = _init_kwargs(cls, {**checkpoint.get("datamodule_hyper_parameters", {}), **overrides})
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise CheckpointError(
            f"{name!r} cannot build {cls.__name__}: {err} (its saved datamodule hyperparameters are "
            f"{sorted(kwargs)}); pass the missing ones to load_from_checkpoint as keyword arguments"
        ) from None
    datamodule = cls(**kwargs)
    if checkpoint.get("datamodule"):
        datamodule.load_state_dict(checkpoint["datamodule"])
    return datamodule
