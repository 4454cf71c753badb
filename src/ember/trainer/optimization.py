"""Turning what ``configure_optimizers`` returns into optimizers and scheduler configs, and
stepping schedulers (Lightning's return forms and scheduler dict keys)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_ACCEPTED = (
    "an optimizer; a list of optimizers; (optimizers, schedulers); a dict with 'optimizer' and optional "
    "'lr_scheduler' (a scheduler or a dict with 'scheduler', 'interval', 'frequency', 'monitor'); or a list of such dicts"
)
_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name"}


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


def _scheduler_config(obj: Any, where: str) -> LRSchedulerConfig:
    if isinstance(obj, Mapping):
        unknown = set(obj) - _SCHEDULER_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown lr_scheduler keys {sorted(unknown)}; allowed: {sorted(_SCHEDULER_KEYS)}")
        if "scheduler" not in obj:
            raise ValueError(f"{where}: an lr_scheduler dict needs a 'scheduler' key")
        cfg = LRSchedulerConfig(**dict(obj))
    else:
        cfg = LRSchedulerConfig(scheduler=obj)
    if not hasattr(cfg.scheduler, "step"):
        raise TypeError(f"{where}: {cfg.scheduler!r} is not a learning-rate scheduler (it has no step())")
    if cfg.interval not in ("epoch", "step"):
        raise ValueError(f"{where}: interval={cfg.interval!r}; choose 'epoch' or 'step'")
    if isinstance(cfg.frequency, bool) or not isinstance(cfg.frequency, int) or cfg.frequency < 1:
        raise ValueError(f"{where}: frequency={cfg.frequency!r}; it must be a positive integer")
    cfg.reduce_on_plateau = isinstance(cfg.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if cfg.reduce_on_plateau and cfg.monitor is None:
        raise ValueError(
            f"{where}: ReduceLROnPlateau needs a metric to watch: return "
            "{'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'monitor': 'val_loss'}}"
        )
    return cfg


def parse_optimizers(returned: Any, owner: str = "configure_optimizers()") -> tuple[list[Any], list[LRSchedulerConfig]]:
    """``(optimizers, scheduler_configs)`` from a ``configure_optimizers`` return value."""
    where = f"{owner} returned {type(returned).__name__}"
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
                unknown = set(d) - {"optimizer", "lr_scheduler", "monitor"}
                if unknown or "optimizer" not in d or not _is_optimizer(d["optimizer"]):
                    raise TypeError(f"{where}: each dict needs an 'optimizer' (and optionally 'lr_scheduler'); got keys {sorted(d)}")
                optimizers.append(d["optimizer"])
                if d.get("lr_scheduler") is not None:
                    sched = d["lr_scheduler"]
                    if not isinstance(sched, Mapping) and d.get("monitor") is not None:
                        sched = {"scheduler": sched, "monitor": d["monitor"]}
                    schedulers.append(_scheduler_config(sched, where))
            return optimizers, schedulers
        if len(items) == 2 and all(isinstance(i, (list, tuple)) for i in items):
            opts, scheds = items
            if not opts or not all(_is_optimizer(o) for o in opts):
                raise TypeError(f"{where}: the first list of (optimizers, schedulers) must hold optimizers")
            return list(opts), [_scheduler_config(s, where) for s in scheds]
        if items and all(_is_optimizer(o) for o in items):
            return items, []
    raise TypeError(f"{where}, which is not usable; return {_ACCEPTED}")
