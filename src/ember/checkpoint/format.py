"""The checkpoint format: a dict of plain values and tensors, versioned, migrated on load.

Keys of format version 1::

    ember_checkpoint_version  int, this format's version (its presence marks an Ember checkpoint)
    versions                  {"ember": str, "torch": str}
    epoch, global_step        loop progress (epochs completed, optimizer steps)
    loops                     {"fit": {"engine": Engine.state_dict(), "batches_in_epoch": int,
                               "epoch_start_rng": {...} | None, ...}}
    state_dict                the model's weights
    optimizer_states          [optimizer.state_dict(), ...]
    lr_schedulers             [scheduler.state_dict(), ...]
    precision                 {"scaler": GradScaler.state_dict()} when one is used
    callbacks                 {callback.state_key: callback.state_dict()}
    loggers                   [logger.state_dict(), ...]
    hyper_parameters          the module's plain hyperparameters
    datamodule_hyper_parameters
    rng_states                see ember.checkpoint.rng

A loaded checkpoint is checked against this layout (:mod:`ember.checkpoint.schema`) before it is
returned: an entry of another type or shape raises a ``CheckpointError`` naming the file and the entry.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ember.checkpoint.io import CheckpointError, PathLike, load_object, save_object
from ember.checkpoint.schema import LAYOUT_VERSION, validate_checkpoint
from ember.version import __version__

FORMAT_VERSION = 1
VERSION_KEY = "ember_checkpoint_version"

#: ``MIGRATIONS[n]`` turns a format-``n`` checkpoint into format ``n + 1``.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


_PLAIN = {str, bytes, bytearray, int, float, bool, complex, type(None)}
_TORCH_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device)


def plain_data(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as data that loads with ``torch.load(weights_only=True)``: NumPy scalars and subclasses
    of numbers and strings (enums) become the plain values, dict/list/tuple subclasses
    (``defaultdict``, named tuples) plain containers; anything else
    (an array, a path, an object) raises a ``TypeError`` saying where it is, rather than writing a
    file that would then be refused. Unchanged containers are returned as they are (a module's
    state dict keeps its ``_metadata``)."""
    if type(obj) in _PLAIN or isinstance(obj, _TORCH_LEAVES):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    for kind in (int, float, str):  # IntEnum, np.float64 (a float subclass), a str-based Enum, ...
        if isinstance(obj, kind):
            return kind.__str__(obj) if kind is str else kind(obj)
    if isinstance(obj, dict):
        items = {k: plain_data(v, f"{where}[{k!r}]") for k, v in obj.items()}
        for k in items:
            if not isinstance(k, (str, int, float, bool, type(None), torch.dtype)):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}: checkpoint keys must be plain values")
        if type(obj) in (dict, collections.OrderedDict) and all(items[k] is v for k, v in obj.items()):
            return obj
        return collections.OrderedDict(items) if isinstance(obj, collections.OrderedDict) else items
    if isinstance(obj, (list, tuple, set)):
        items_ = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if type(obj) in (list, tuple, set) and all(a is b for a, b in zip(items_, obj)):
            return obj
        return set(items_) if isinstance(obj, set) else tuple(items_) if isinstance(obj, tuple) else items_
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds only tensors and plain "
        "values (numbers, strings, bools, None, lists/tuples/dicts of them), so that it loads with "
        "torch.load(weights_only=True); convert it (e.g. str(path), torch.as_tensor(array)) in the state_dict that returns it"
    )


def new_checkpoint() -> dict[str, Any]:
    """An empty checkpoint of the current format: only the format version and the Ember and torch
    versions; the writer adds the other keys (see the module docstring) before :func:`save_checkpoint`."""
    return {VERSION_KEY: FORMAT_VERSION, "versions": {"ember": str(__version__), "torch": str(torch.__version__)}}


def migrate(checkpoint: dict[str, Any], name: str = "checkpoint") -> dict[str, Any]:
    """Bring an older checkpoint up to :data:`FORMAT_VERSION`; refuse a newer one."""
    version = checkpoint.get(VERSION_KEY)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{name!r} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name!r} was written in checkpoint format {version} by a newer Ember; this Ember reads formats up "
            f"to {FORMAT_VERSION}: upgrade ember to load it"
        )
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CheckpointError(f"{name!r} is in checkpoint format {version}, which this Ember cannot migrate")
        checkpoint = step(dict(checkpoint))
        version += 1
        checkpoint[VERSION_KEY] = version
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: PathLike) -> None:
    """Write a checkpoint dict atomically (local path or fsspec URL)."""
    if checkpoint.get(VERSION_KEY) != FORMAT_VERSION:
        raise ValueError(f"not an Ember checkpoint dict of format {FORMAT_VERSION} (build it with new_checkpoint())")
    save_object(plain_data(checkpoint), path)


def load_checkpoint(path: PathLike, map_location: Any = None) -> dict[str, Any]:
    """Load and validate an Ember checkpoint (only from a regular file; its layout checked, see
    :mod:`ember.checkpoint.schema`); never runs code from the file (weights_only)."""
    name = os.fspath(path)
    obj = load_object(path, map_location=map_location)
    if not isinstance(obj, dict) or VERSION_KEY not in obj:
        raise CheckpointError(f"{name!r} is a torch file but not an Ember checkpoint (no {VERSION_KEY!r} key)")
    checkpoint = migrate(obj, name)
    if checkpoint[VERSION_KEY] == LAYOUT_VERSION:  # the layout checked is this format's (a test keeps them equal)
        validate_checkpoint(checkpoint, name)
    return checkpoint
