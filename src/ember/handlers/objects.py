"""What a checkpoint holds: the state dicts of nested objects (``{name: object}``, dicts and lists of
them), and loading them back, as Ignite's ``Checkpoint`` collects and ``load_objects`` restores them.
``DataParallel``/``DistributedDataParallel`` models are saved and loaded through their ``module``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ember.checkpoint import io as ckpt_io
from ember.distributed import comms


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(path, object)`` of the objects in a nested dict/list of objects."""
    if isinstance(tree, Mapping):
        return [(f"{k}{'.' + p if p else ''}", o) for k, v in tree.items() for p, o in _leaves(v)]
    if isinstance(tree, Sequence) and not isinstance(tree, (str, bytes)):
        return [(f"{i}{'.' + p if p else ''}", o) for i, v in enumerate(tree) for p, o in _leaves(v)]
    return [("", tree)]


def _unwrapped(obj: Any) -> Any:
    parallel = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return obj.module if isinstance(obj, parallel) else obj


def _is_zero_optimizer(obj: Any) -> bool:
    # a ZeroRedundancyOptimizer exists only once its module is imported: no import (and its warnings) here
    module = sys.modules.get("torch.distributed.optim")
    return module is not None and isinstance(obj, module.ZeroRedundancyOptimizer)


def check_objects(objs: Any, method: str, what: str) -> None:
    """``TypeError`` unless ``objs`` is a dict whose (nested) objects all have ``method``."""
    if not isinstance(objs, Mapping):
        raise TypeError(f"{what} must be a dict of name -> object, got {type(objs).__name__}")
    for path, obj in _leaves(objs):
        if not callable(getattr(obj, method, None)):
            raise TypeError(f"{what}[{path!r}] must have a {method}() method, got {type(obj).__name__}")


def state_dicts(to_save: Mapping[str, Any], save_on_rank: int = 0) -> dict[str, Any]:
    """``to_save`` with every object replaced by its ``state_dict()`` (a ZeRO optimizer's is consolidated
    on ``save_on_rank``; other ranks get ``{}`` for it)."""

    def state(obj: Any) -> Any:
        if isinstance(obj, Mapping):
            return type(obj)({k: state(v) for k, v in obj.items()})
        if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
            return type(obj)([state(v) for v in obj])
        obj = _unwrapped(obj)
        if _is_zero_optimizer(obj):
            obj.consolidate_state_dict(to=save_on_rank)
            if comms.get_rank() != save_on_rank:
                return {}
        return obj.state_dict()

    return {k: state(v) for k, v in to_save.items()}


def load_objects(to_load: Mapping[str, Any], checkpoint: Any, **kwargs: Any) -> None:
    """Load ``checkpoint`` (a dict, or a file read with ``weights_only=True``) into ``to_load``; see
    ``Checkpoint.load_objects``."""
    if not isinstance(checkpoint, (Mapping, str, os.PathLike)):
        raise TypeError(f"checkpoint must be a dict or a path, got {type(checkpoint).__name__}")
    check_objects(to_load, "load_state_dict", "to_load")
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = ckpt_io.load_object(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"the checkpoint file holds a {type(checkpoint).__name__}, not a dict of state dicts")

    def load(obj: Any, state: Any) -> None:
        obj = _unwrapped(obj)
        if isinstance(obj, torch.nn.Module):
            obj.load_state_dict(state, **kwargs)
        else:
            obj.load_state_dict(state)

    if len(to_load) == 1:
        ((key, obj),) = to_load.items()
        if key not in checkpoint:
            load(obj, checkpoint)
            return
    _load_tree(load, to_load, checkpoint, "")


def _load_tree(load: Callable[[Any, Any], None], objs: Any, state: Any, path: str) -> None:
    if isinstance(objs, dict) and isinstance(state, Mapping):
        missing = [k for k in objs if k not in state]
        if missing:
            raise ValueError(
                f"checkpoint has no entries for {[f'{path}{k}' for k in missing]}; it holds {sorted(map(str, state))}"
            )
        for k, v in objs.items():
            _load_tree(load, v, state[k], f"{path}{k}.")
    elif isinstance(objs, list) and isinstance(state, Sequence):
        if len(objs) != len(state):
            raise ValueError(f"checkpoint entry {path.rstrip('.')!r} holds {len(state)} states for {len(objs)} objects")
        for i, (v, s) in enumerate(zip(objs, state)):
            _load_tree(load, v, s, f"{path}{i}.")
    else:
        load(objs, state)
