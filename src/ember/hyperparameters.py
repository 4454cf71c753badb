"""Hyperparameters: what ``save_hyperparameters`` records (plain values only), the dict they live
in, and which of them go to the loggers."""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Mapping
from typing import Any


class AttributeDict(dict):
    """A dict whose keys read as attributes: ``self.hparams.lr``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no hyperparameter named {key!r}; known: {sorted(self)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str, numbers.Number)):
        return not isinstance(value, complex)
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def plain_hyperparameters(values: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Keep the plain values (numbers, strings, bools, None, lists/dicts of them); warn about the rest."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if _is_plain(value):
            kept[key] = list(value) if isinstance(value, tuple) else value
        else:
            warnings.warn(
                f"{owner}.save_hyperparameters(): {key!r} is a {type(value).__name__}, not a plain value; "
                f"it is not saved and must be passed again when loading (e.g. load_from_checkpoint(..., {key}=...))",
                stacklevel=3,
            )
    return kept


def init_arguments(obj: Any, frame: Any) -> dict[str, Any]:
    """The arguments of every ``__init__`` of ``obj``'s classes on the call stack above ``frame``
    (a base class calling ``save_hyperparameters()`` records its subclass's arguments too, as in
    Lightning); an outer (subclass) ``__init__`` wins on a shared name."""
    inits = {getattr(getattr(cls, "__init__", None), "__code__", None): cls for cls in type(obj).__mro__}
    found: list[dict[str, Any]] = []
    caller = frame.f_back if frame is not None else None
    while caller is not None:
        cls = inits.get(caller.f_code) if caller.f_locals.get("self") is obj else None
        if cls is not None:
            found.append(_frame_arguments(cls.__init__, caller.f_locals))
        caller = caller.f_back
    del frame, caller
    if not found:
        raise RuntimeError("save_hyperparameters() could not see the calling __init__")
    values: dict[str, Any] = {}
    for arguments in found:  # innermost (base) first, so the subclass's values win
        values.update(arguments)
    return values


def _frame_arguments(init: Any, local_vars: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, p in inspect.signature(init).parameters.items():
        if name == "self" or p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            values.update(local_vars.get(name, {}))
        elif name in local_vars:
            values[name] = local_vars[name]
    return values
