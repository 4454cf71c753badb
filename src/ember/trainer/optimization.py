"""Turning what ``configure_optimizers`` returns into optimizers and scheduler configs, and
stepping schedulers (Lightning's return forms and scheduler dict keys)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_ACCEPTED = (
    "an optimizer; a list of optimizers; (optimizers, schedulers); a dict with 'optimizer' and optional "
    "'lr_scheduler' (a scheduler or a dict with 'scheduler', 'interval', 'frequency', 'monitor'); or a list of such dicts"
)
_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name", "reduce_on_plateau"}
_OPTIMIZER_KEYS = {"optimizer", "lr_scheduler", "monitor"}
_MANUAL_IGNORED = ("monitor", "strict", "reduce_on_plateau")  # the module steps its schedulers itself


@dataclass
class LRSchedulerConfig:
    """One scheduler and when to step it (Lightning's keys)."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None
    reduce_on_plateau: bool = False


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, torch.optim.Optimizer) or (hasattr(obj, "step") and hasattr(obj, "param_groups"))


def _scheduler_config(obj: Any, where: str, automatic: bool) -> LRSchedulerConfig:
    """One scheduler (or scheduler dict) as a config. As Lightning: unknown dict keys warn and are
    dropped; under manual optimization the stepping keys are ignored (with a warning) and
    ReduceLROnPlateau needs no monitor, since the module steps its schedulers itself."""
    if isinstance(obj, Mapping):
        unknown = set(obj) - _SCHEDULER_KEYS
        if unknown:
            warnings.warn(
                f"Found unsupported keys in the lr scheduler dict: {unknown}. HINT: remove them from the output "
                f"of `configure_optimizers` (allowed: {sorted(_SCHEDULER_KEYS)})",
                RuntimeWarning,
                stacklevel=4,
            )
        options = {k: v for k, v in obj.items() if k in _SCHEDULER_KEYS}
        if not automatic:
            ignored = [k for k in options if k in _MANUAL_IGNORED]
            if ignored:
                warnings.warn(
                    f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be ignored. You need "
                    "to call `lr_scheduler.step()` manually in manual optimization.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            options = {k: v for k, v in options.items() if k not in _MANUAL_IGNORED}
        if "scheduler" not in options:
            raise ValueError(f"{where}: an lr_scheduler dict needs a 'scheduler' key")
        cfg = LRSchedulerConfig(**options)
    else:
        cfg = LRSchedulerConfig(scheduler=obj)
    if not hasattr(cfg.scheduler, "step"):
        raise TypeError(f"{where}: {cfg.scheduler!r} is not a learning-rate scheduler (it has no step())")
    if not (callable(getattr(cfg.scheduler, "state_dict", None)) and callable(getattr(cfg.scheduler, "load_state_dict", None))):
        raise TypeError(  # as Lightning: checkpoints save and restore every scheduler
            f"{where}: the lr scheduler {type(cfg.scheduler).__name__} is invalid: it needs `state_dict` and "
            "`load_state_dict` methods (checkpoints save and restore it)"
        )
    if cfg.interval not in ("epoch", "step"):
        raise ValueError(f"{where}: interval={cfg.interval!r}; choose 'epoch' or 'step'")
    if isinstance(cfg.frequency, bool) or not isinstance(cfg.frequency, int) or cfg.frequency < 1:
        raise ValueError(f"{where}: frequency={cfg.frequency!r}; it must be a positive integer")
    plateau = isinstance(cfg.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    cfg.reduce_on_plateau = automatic and (cfg.reduce_on_plateau or plateau)
    if cfg.reduce_on_plateau and cfg.monitor is None:
        raise ValueError(
            f"{where}: ReduceLROnPlateau needs a metric to watch: return "
            "{'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'monitor': 'val_loss'}} "
            "(or step it yourself under manual optimization)"
        )
    return cfg


def _check_attached(optimizers: list[Any], configs: list[LRSchedulerConfig], where: str) -> None:
    """Every scheduler steps one of the returned optimizers (as Lightning requires)."""
    for cfg in configs:
        bound = getattr(cfg.scheduler, "optimizer", None)
        if bound is not None and not any(bound is o for o in optimizers):
            raise ValueError(
                f"{where}: Some schedulers are attached with an optimizer that wasn't returned from "
                f"`configure_optimizers`: {type(cfg.scheduler).__name__} steps a {type(bound).__name__} "
                "that is not among the returned optimizers"
            )


def parse_optimizers(
    returned: Any, owner: str = "configure_optimizers()", automatic: bool = True
) -> tuple[list[Any], list[LRSchedulerConfig]]:
    """``(optimizers, scheduler_configs)`` from a ``configure_optimizers`` return value
    (``automatic``: whether the module uses automatic optimization)."""
    where = f"{owner} returned {type(returned).__name__}"
    optimizers, configs = _parse(returned, where, automatic)
    _check_attached(optimizers, configs, where)
    return optimizers, configs


def _parse(returned: Any, where: str, automatic: bool) -> tuple[list[Any], list[LRSchedulerConfig]]:
    if returned is None:
        return [], []
    if _is_optimizer(returned):
        return [returned], []
    if isinstance(returned, Mapping):
        returned = [returned]
    if isinstance(returned, Sequence) and not isinstance(returned, (str, bytes)):
        items = list(returned)
        if items and all(isinstance(i, Mapping) for i in items):
            optimizers, schedulers = [], []
            for d in items:
                unknown = set(d) - _OPTIMIZER_KEYS
                if unknown:
                    warnings.warn(
                        f"Found unsupported keys in the optimizer configuration: {unknown} "
                        f"(allowed: {sorted(_OPTIMIZER_KEYS)})",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                if "optimizer" not in d or not _is_optimizer(d["optimizer"]):
                    raise TypeError(f"{where}: each dict needs an 'optimizer' (and optionally 'lr_scheduler'); got keys {sorted(d)}")
                optimizers.append(d["optimizer"])
                if d.get("lr_scheduler") is not None:
                    sched = d["lr_scheduler"]
                    if not isinstance(sched, Mapping) and d.get("monitor") is not None and automatic:
                        sched = {"scheduler": sched, "monitor": d["monitor"]}
                    schedulers.append(_scheduler_config(sched, where, automatic))
            return optimizers, schedulers
        if len(items) == 2 and all(isinstance(i, (list, tuple)) for i in items):
            opts, scheds = items
            if not opts or not all(_is_optimizer(o) for o in opts):
                raise TypeError(f"{where}: the first list of (optimizers, schedulers) must hold optimizers")
            return list(opts), [_scheduler_config(s, where, automatic) for s in scheds]
        if items and all(_is_optimizer(o) for o in items):
            return items, []
    raise TypeError(f"{where}, which is not usable; return {_ACCEPTED}")
