"""Checking a loaded checkpoint's structure before anything uses it.

Every entry Ember writes (see :mod:`ember.checkpoint.format`) must have the type Ember writes it
with, down to the RNG states, the loop counters and the states of Ember's own callbacks and loggers,
so that a malformed or hand-edited file fails on load with an error naming the file and the entry
(``'x.ckpt' is malformed: ['loops']['fit']['global_step'] is a str, expected an int >= 0``), never later
with an ``AttributeError`` in the middle of a restore. Entries Ember does not know (a user's own
keys, a user callback's state beyond being a dict) are left to their owners.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ember.checkpoint.io import CheckpointError

#: the checkpoint format version whose layout this module checks (ember.checkpoint.format.FORMAT_VERSION)
LAYOUT_VERSION = 1
_TORCH_RNG_BYTES = torch.get_rng_state().numel()
_PYTHON_RNG_WORDS = 625  # random.getstate()[1]: 624 Mersenne Twister words and the position
_NUMPY_RNG_WORDS = 624


class _Malformed(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _int(value: Any, where: str, minimum: int | None = 0, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        shown = repr(value) if isinstance(value, (int, float)) else f"a {_kind(value)}"
        raise _Malformed(where, f"is {shown}, expected an int{bound}{' or None' if none else ''}")


def _number(value: Any, where: str, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(where, f"is a {_kind(value)}, expected a number{' or None' if none else ''}")


def _of(value: Any, kinds: type | tuple[type, ...], where: str, what: str, none: bool = False) -> None:
    if value is None and none:
        return
    if not isinstance(value, kinds):
        raise _Malformed(where, f"is a {_kind(value)}, expected {what}{' or None' if none else ''}")


def _dict(value: Any, where: str) -> Mapping[Any, Any]:
    _of(value, Mapping, where, "a dict")
    return value


def _str_keys(value: Any, where: str) -> Mapping[str, Any]:
    for key in _dict(value, where):
        if not isinstance(key, str):
            raise _Malformed(f"{where}[{key!r}]", "has a key that is not a str")
    return value


def _list(value: Any, where: str, length: int | None = None) -> list[Any] | tuple[Any, ...]:
    _of(value, (list, tuple), where, "a list")
    if length is not None and len(value) != length:
        raise _Malformed(where, f"has {len(value)} items, expected {length}")
    return value


def _byte_state(value: Any, where: str, size: int | None = None) -> None:
    _of(value, torch.Tensor, where, "a tensor (a generator state)")
    if value.dtype != torch.uint8 or value.dim() != 1 or (size is not None and value.numel() != size):
        expected = f"{size} " if size is not None else ""
        raise _Malformed(where, f"is a {value.dtype} tensor of shape {tuple(value.shape)}, expected {expected}uint8 bytes")


def _fields(state: Mapping[str, Any], where: str, spec: dict[str, Callable[[Any, str], None]], required: tuple = ()) -> None:
    for key in required:
        if key not in state:
            raise _Malformed(where, f"has no {key!r} entry")
    for key, check in spec.items():
        if key in state:
            check(state[key], f"{where}[{key!r}]")


def _engine(state: Any, where: str) -> None:
    _fields(
        _dict(state, where), where,
        {
            "iteration": _int, "epoch": _int, "epoch_iteration": _int,
            "epoch_length": lambda v, w: _int(v, w, 1, none=True),
            "max_epochs": lambda v, w: _int(v, w, none=True), "max_iters": lambda v, w: _int(v, w, none=True),
        },
        required=("iteration", "epoch", "epoch_iteration"),
    )  # fmt: skip


def _epoch_rng(state: Any, where: str) -> None:
    if state is not None:
        _fields(_dict(state, where), where, {"torch": _torch_rng, "loader_generator": _byte_state}, required=("torch",))


def _torch_rng(value: Any, where: str) -> None:
    _byte_state(value, where, _TORCH_RNG_BYTES)


def _fit_state(state: Any, where: str) -> None:
    _fields(
        _str_keys(state, where), where,
        {
            "engine": _engine, "global_step": _int, "current_epoch": _int, "micro": _int, "batches": _int,
            "batches_stepped": _int,
            "epoch_end_pending": lambda v, w: _of(v, bool, w, "a bool"),
            "should_stop": lambda v, w: _of(v, bool, w, "a bool"),
            "epoch_rng": _epoch_rng,
            "callback_metrics": lambda v, w: _each_value(_str_keys(v, w), w, _number),
            "loader_generator": _byte_state,
            "grads": lambda v, w: _each_value(_str_keys(v, w), w, lambda t, w2: _of(t, torch.Tensor, w2, "a tensor")),
        },
        required=("engine", "global_step", "current_epoch"),
    )  # fmt: skip
    if state.get("batches") and state.get("epoch_rng") is None:
        raise _Malformed(where, "is mid-epoch (batches > 0) but holds no 'epoch_rng' to rebuild the epoch's data order")


def _each_value(mapping: Mapping[Any, Any], where: str, check: Callable[[Any, str], None]) -> None:
    for key, value in mapping.items():
        check(value, f"{where}[{key!r}]")


def _each_item(items: Any, where: str, check: Callable[[Any, str], None]) -> None:
    for i, value in enumerate(_list(items, where)):
        check(value, f"{where}[{i}]")


def _optimizer_state(state: Any, where: str) -> None:
    _fields(_dict(state, where), where, {}, required=("state", "param_groups"))
    for key, value in _dict(state["state"], f"{where}['state']").items():
        here = f"{where}['state'][{key!r}]"
        _int(key, f"{here} (its key, a parameter's position)")
        _each_value(_str_keys(value, here), here, _optimizer_value)
    groups = _list(state["param_groups"], f"{where}['param_groups']")
    if not groups:
        raise _Malformed(f"{where}['param_groups']", "is empty: an optimizer has at least one parameter group")
    for i, group in enumerate(groups):
        here = f"{where}['param_groups'][{i}]"
        _fields(_str_keys(group, here), here, {"lr": lambda v, w: _of(v, (int, float, torch.Tensor), w, "a number")}, ("params",))
        _each_item(group["params"], f"{here}['params']", _int)  # positions (FSDP's names are turned into them)


_SCALAR = (torch.Tensor, int, float, bool, type(None))


def _optimizer_value(value: Any, where: str) -> None:
    """A value of an optimizer's per-parameter state: a tensor, a number, None, or a list of tensors
    and numbers (LBFGS)."""
    if isinstance(value, (list, tuple)):
        _each_item(value, where, lambda v, w: _of(v, (torch.Tensor, int, float), w, "a tensor or a number"))
    else:
        _of(value, _SCALAR, where, "a tensor, a number or None")


def _scheduler_state(state: Any, where: str) -> None:
    scalar = lambda v, w: _of(v, (int, float, torch.Tensor), w, "a number")  # noqa: E731  (a tensor lr too)
    numbers = lambda v, w: _each_item(v, w, scalar)  # noqa: E731
    _fields(
        _str_keys(state, where), where,
        {"last_epoch": lambda v, w: _int(v, w, -1), "_step_count": _int, "base_lrs": numbers, "_last_lr": numbers},
    )  # fmt: skip


def _precision_state(state: Any, where: str) -> None:
    scaler = _str_keys(state, where).get("scaler")
    if scaler:
        here = f"{where}['scaler']"
        spec = {"scale": _number, "growth_factor": _number, "backoff_factor": _number, "growth_interval": _int, "_growth_tracker": _int}
        _fields(_str_keys(scaler, here), here, spec, required=tuple(spec))


def _rng_states(state: Any, where: str) -> None:
    _str_keys(state, where)
    if "python" in state:
        here = f"{where}['python']"
        version, internal, gauss = _list(state["python"], here, 3)
        _int(version, f"{here}[0]")
        words = _list(internal, f"{here}[1]", _PYTHON_RNG_WORDS)
        if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in words):
            raise _Malformed(f"{here}[1]", "holds something other than non-negative ints")
        _number(gauss, f"{here}[2]", none=True)
    if "numpy" in state:
        here = f"{where}['numpy']"
        spec = {
            "kind": lambda v, w: _choice(v, w, ("MT19937",)), "pos": _int, "has_gauss": _int, "cached_gaussian": _number,
            "keys": lambda v, w: _numpy_keys(v, w),
        }  # fmt: skip
        _fields(_str_keys(state["numpy"], here), here, spec, required=tuple(spec))
    if "torch" in state:
        _torch_rng(state["torch"], f"{where}['torch']")
    if "cuda" in state:
        _each_item(state["cuda"], f"{where}['cuda']", _byte_state)


def _numpy_keys(value: Any, where: str) -> None:
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.numel() != _NUMPY_RNG_WORDS or value.is_floating_point() or value.is_complex():
            raise _Malformed(where, f"is a {value.dtype} tensor of shape {tuple(value.shape)}, expected {_NUMPY_RNG_WORDS} ints")
        return
    if len(_list(value, where, _NUMPY_RNG_WORDS)) and not all(isinstance(w, int) and not isinstance(w, bool) for w in value):
        raise _Malformed(where, "holds something other than ints")


def _model_checkpoint_state(state: Any, where: str) -> None:
    path = lambda v, w: _of(v, str, w, "a path (str)")  # noqa: E731
    topk_spec = {
        "saved": lambda v, w: _each_value(_str_keys(v, w), w, _number),
        "k": lambda v, w: _int(v, w, -1),
        "mode": lambda v, w: _choice(v, w, ("min", "max")),
    }
    spec = {
        "monitor": lambda v, w: _of(v, str, w, "a metric name", none=True),
        "dirpath": lambda v, w: _of(v, str, w, "a directory (str)", none=True),
        "topk": lambda v, w: _fields(_str_keys(v, w), w, topk_spec),
        "best_model_path": path, "last_model_path": path, "kth_best_model_path": path,
        "best_model_score": lambda v, w: _number(v, w, none=True),
        "last_step_saved": lambda v, w: _int(v, w, -1),
        "deferred": lambda v, w: _of(v, bool, w, "a bool"), "validated": lambda v, w: _of(v, bool, w, "a bool"),
        "dropping": lambda v, w: _each_item(v, w, path),
    }  # fmt: skip
    _fields(_str_keys(state, where), where, spec)


def _early_stopping_state(state: Any, where: str) -> None:
    spec = {
        "wait_count": _int, "stopped_epoch": _int, "best_score": _number, "patience": _int,
        "stopping_reason": lambda v, w: _choice(v, w, (0, 1, 2, 3, 4)),  # EarlyStoppingReason's values
        "stopping_reason_message": lambda v, w: _of(v, str, w, "a message (str)", none=True),
    }  # fmt: skip
    _fields(_str_keys(state, where), where, spec, required=("wait_count", "stopped_epoch", "best_score"))


def _choice(value: Any, where: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _Malformed(where, f"is {value!r}, expected one of {allowed}")


#: state_key prefix -> the check of the state of Ember's own callbacks with that key
BUILTIN_CALLBACKS: dict[str, Callable[[Any, str], None]] = {
    "ModelCheckpoint{": _model_checkpoint_state,
    "EarlyStopping{": _early_stopping_state,
}


def _callbacks(states: Any, where: str) -> None:
    for key, state in _str_keys(states, where).items():
        here = f"{where}[{key!r}]"
        check = next((c for prefix, c in BUILTIN_CALLBACKS.items() if key.startswith(prefix)), None)
        _str_keys(state, here) if check is None else check(state, here)


def _version(value: Any, where: str) -> None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", ".."):
        raise _Malformed(where, f"is {value!r}, expected None, an int >= 0 or a directory name")


def _logger_state(state: Any, where: str) -> None:
    text = lambda v, w: _of(v, str, w, "a str", none=True)  # noqa: E731
    spec = {
        "name": text, "version": _version, "step": lambda v, w: _int(v, w, None, none=True),
        "run_id": text, "experiment_name": text,
    }  # fmt: skip
    _fields(_str_keys(state, where), where, spec)


def _state_dict(state: Any, where: str) -> None:
    for key, value in _str_keys(state, where).items():
        if not key.endswith("_extra_state"):  # a module's get_extra_state() may return any plain value
            _of(value, torch.Tensor, f"{where}[{key!r}]", "a tensor")


def _sharded(value: Any, where: str) -> None:
    if isinstance(value, bool):
        return
    _fields(_str_keys(value, where), where, {"optimizers": _int, "format": lambda v, w: _of(v, str, w, "a str")})


TOP_LEVEL: dict[str, Callable[[Any, str], None]] = {
    "versions": lambda v, w: _each_value(_str_keys(v, w), w, lambda s, w2: _of(s, str, w2, "a str")),
    "epoch": _int,
    "global_step": _int,
    "sharded": _sharded,
    "state_dict": _state_dict,
    "hyper_parameters": _str_keys,
    "datamodule_hyper_parameters": _str_keys,
    "loops": lambda v, w: _fields(_str_keys(v, w), w, {"fit": _fit_state}, required=("fit",)),
    "optimizer_states": lambda v, w: _each_item(v, w, _optimizer_state),
    "lr_schedulers": lambda v, w: _each_item(v, w, _scheduler_state),
    "precision": _precision_state,
    "callbacks": _callbacks,
    "loggers": lambda v, w: _each_item(v, w, _logger_state),
    "datamodule": _dict,
    "rng_states": _rng_states,
}
#: written with ``loops`` in every full (not weights-only) checkpoint; a resume needs them all
WITH_LOOPS = ("optimizer_states", "lr_schedulers", "precision", "callbacks", "loggers", "rng_states")


def validate_checkpoint(checkpoint: Mapping[str, Any], name: str) -> None:
    """Raise a :class:`CheckpointError` naming ``name`` and the entry if an entry Ember writes has
    another type or shape than Ember writes (see the module docstring)."""
    try:
        for key, check in TOP_LEVEL.items():
            if key in checkpoint:
                check(checkpoint[key], f"[{key!r}]")
        if "loops" in checkpoint:
            sharded = isinstance(checkpoint.get("sharded"), Mapping)  # FSDP's metadata: tensors stored beside it
            for key in WITH_LOOPS:
                if key not in checkpoint and not (sharded and key == "optimizer_states"):
                    raise _Malformed("the checkpoint", f"holds the loop state ('loops') but no {key!r} to resume with")
    except _Malformed as err:
        raise CheckpointError(f"{name!r} is malformed: {err}") from None
