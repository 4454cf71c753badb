"""Search spaces: dotted config paths mapped to Optuna distributions, read from a dict or YAML file.

Each key is a dotted path into the ``ember fit`` config (``model.init_args.lr``,
``data.init_args.batch_size``, ``trainer.gradient_clip_val``); each value says how to sample it::

    model.init_args.lr:         {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
    model.init_args.dropout:    {type: float, low: 0.0, high: 0.5, step: 0.1}
    model.init_args.channels:   {type: int, low: 16, high: 64, step: 16}
    data.init_args.batch_size:  {type: categorical, choices: [32, 64, 128]}
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAM_TYPES = ("float", "int", "categorical")
_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Param:
    """One searched setting: its dotted config path and how to sample it."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Sample this parameter from ``trial`` (an ``optuna.Trial``)."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def example(self) -> Any:
        """A value inside the range (used to check the key against a config before any trial runs)."""
        return self.choices[0] if self.type == "categorical" else self.low


def load_space(space: Mapping[str, Any] | str | os.PathLike) -> dict[str, Param]:
    """Read and check a search space (a mapping, or a YAML file holding one); see the module docs.

    Raises ``ValueError`` naming the parameter and the problem (unknown type, missing or unknown
    key, empty range, ...), ``FileNotFoundError`` for a missing file.
    """
    if isinstance(space, (str, os.PathLike)):
        path = Path(space)
        where = f"search space file {str(path)!r}"
        if not path.is_file():
            raise FileNotFoundError(f"{where} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{where} is not valid YAML: {err}") from None
    elif isinstance(space, Mapping):
        data, where = space, "search space"
    else:
        raise TypeError(f"space must be a mapping or a YAML file path, got {type(space).__name__}")
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must map dotted config paths to parameter specs, got {type(data).__name__}")
    if not data:
        raise ValueError(
            f"{where} is empty: give at least one parameter, e.g. model.init_args.lr: {{type: float, low: 1.0e-5, high: 0.1, log: true}}"
        )
    return {name: _param(name, spec, where) for name, spec in data.items()}


def _param(name: Any, spec: Any, where: str) -> Param:
    if not isinstance(name, str) or not _DOTTED.match(name):
        raise ValueError(f"{where}: {name!r} is not a dotted config path like 'model.init_args.lr'")
    at = f"{where}: parameter {name!r}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{at} must be a mapping with a 'type' ({', '.join(PARAM_TYPES)}), got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ValueError(f"{at} has unknown type {kind!r}; use one of {', '.join(map(repr, PARAM_TYPES))}")
    unknown = set(spec) - _KEYS[kind]
    if unknown:
        raise ValueError(f"{at}: unknown keys {sorted(unknown)} for type {kind!r}; allowed: {sorted(_KEYS[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ValueError(f"{at}: 'choices' must be a non-empty list, got {choices!r}")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ValueError(f"{at}: choice {c!r} must be None, a bool, a number or a string")
        return Param(name, kind, choices=tuple(choices))
    number = int if kind == "int" else numbers.Real
    spec = {k: _yaml_float(v) if kind == "float" and k in ("low", "high", "step") else v for k, v in spec.items()}
    for key in ("low", "high"):
        if key not in spec:
            raise ValueError(f"{at}: missing {key!r}")
        if isinstance(spec[key], bool) or not isinstance(spec[key], number):
            raise ValueError(f"{at}: {key}={spec[key]!r} must be {'an integer' if kind == 'int' else 'a number'}")
    low, high = spec["low"], spec["high"]
    if low > high:
        raise ValueError(f"{at}: low={low!r} is above high={high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{at}: log={log!r} must be true or false")
    if log and low <= 0:
        raise ValueError(f"{at}: log=true needs low > 0, got low={low!r}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise ValueError(f"{at}: step={step!r} must be a positive {'integer' if kind == 'int' else 'number'}")
        if log and (kind == "float" or step != 1):
            raise ValueError(f"{at}: step={step!r} cannot be combined with log=true")
    if kind == "float":
        return Param(name, kind, float(low), float(high), log, None if step is None else float(step))
    return Param(name, kind, low, high, log, step)


def _yaml_float(value: Any) -> Any:
    """PyYAML reads ``1e-5`` (no dot) as a string; take it as the number it was meant to be."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def nested_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model.init_args.lr": 0.1}`` -> ``{"model": {"init_args": {"lr": 0.1}}}`` (a config fragment)."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"search space keys {dotted!r} and {'.'.join(parents)!r} overlap")
            node = child
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"search space key {dotted!r} overlaps a longer key under it")
        node[leaf] = value
    return out
