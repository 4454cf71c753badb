"""``LearningRateMonitor``: log every optimizer's learning rate (and optionally momentum and weight
decay) to the Trainer's loggers, under Lightning's names."""

from __future__ import annotations

import warnings
from typing import Any

from ember.callbacks.callback import Callback
from ember.loggers.send import send_metrics

_INTERVALS = (None, "step", "epoch")


class LearningRateMonitor(Callback):
    """Log learning rates while training.

    Names follow Lightning: ``lr-<OptimizerClass>`` (``lr-Adam``; a second ``Adam`` is
    ``lr-Adam-1``), or the scheduler config's ``"name"``; with several parameter groups,
    ``<name>/pg1``, ``<name>/pg2``, ... (or the group's own ``"name"``, also for a single named
    group). Optimizers with a scheduler come first, one entry per scheduler. ``log_momentum`` adds
    ``<name>-momentum`` (``betas[0]`` for Adam-like optimizers) and ``log_weight_decay``
    ``<name>-weight_decay``.

    Args:
        logging_interval: "step": at the start of every batch whose values are logged
            (``log_every_n_steps``), at the step its ``self.log`` values go to (the rate the batch
            trains with); "epoch": at each epoch start; None: optimizers with a "step" scheduler per
            step, with an "epoch" scheduler per epoch, and those without a scheduler at both.

    Example::

        trainer = ember.Trainer(callbacks=[LearningRateMonitor(logging_interval="step")])
    """

    def __init__(
        self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False
    ) -> None:
        if logging_interval not in _INTERVALS:
            raise ValueError(f"logging_interval={logging_interval!r} is not valid; choose 'step', 'epoch' or None")
        for arg, value in (("log_momentum", log_momentum), ("log_weight_decay", log_weight_decay)):
            if not isinstance(value, bool):
                raise TypeError(f"{arg} must be True or False, got {value!r}")
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self._names: list[tuple[Any, list[str], str | None]] = []  # (optimizer, group names, interval)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Name each optimizer's rates (see the class docstring); raises ``ValueError`` when the Trainer
        has no logger (unless ``fast_dev_run`` turned the loggers off)."""
        if not trainer.loggers and not getattr(trainer, "fast_dev_run", 0):  # fast_dev_run turns loggers off
            raise ValueError("LearningRateMonitor needs a logger: the Trainer was built with logger=False")
        self._names = _optimizer_names(trainer)
        if self.log_momentum and any(
            "momentum" not in opt.defaults and "betas" not in opt.defaults for opt, _, _ in self._names
        ):
            warnings.warn(
                "You have set log_momentum=True, but some optimizers do not have momentum. This will log a "
                "value 0 for the momentum.",
                RuntimeWarning,
                stacklevel=2,
            )

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Unless ``logging_interval="step"``: send the rates (with None: of the optimizers without a
        "step" scheduler) to the loggers, at the step of the batches trained so far."""
        if self.logging_interval != "step":
            stats = self._stats("epoch" if self.logging_interval is None else "any")
            if stats:
                send_metrics(trainer.loggers, stats, trainer.fit_progress.batches_stepped)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Unless ``logging_interval="epoch"``, on the batches whose values are logged
        (``log_every_n_steps``): send the rates this batch trains with (with None: of the optimizers
        without an "epoch" scheduler) at the step its ``self.log`` values are logged at."""
        if self.logging_interval == "epoch":
            return
        step = trainer.fit_progress.batches_stepped
        if (step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop:
            stats = self._stats("step" if self.logging_interval is None else "any")
            if stats:
                send_metrics(trainer.loggers, stats, step)

    def _stats(self, interval: str) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for optimizer, names, opt_interval in self._names:
            if interval != "any" and opt_interval not in (interval, None):
                continue
            betas = "betas" in optimizer.defaults
            for group, key in zip(optimizer.param_groups, names):
                stats[key] = group["lr"]
                if self.log_momentum:
                    stats[f"{key}-momentum"] = group["betas"][0] if betas else group.get("momentum", 0)
                if self.log_weight_decay:
                    stats[f"{key}-weight_decay"] = group.get("weight_decay", 0.0)
        return stats


def _optimizer_names(trainer: Any) -> list[tuple[Any, list[str], str | None]]:
    """``(optimizer, a name per param group, its scheduler's interval or None)``, Lightning's way: one
    entry per scheduler config, then one per optimizer without a scheduler; a second unnamed optimizer
    of a class is ``-1``, a third ``-2``; several groups get ``/pg<i>`` or ``/<group name>``."""
    entries: list[tuple[Any, str, str | None]] = []
    for cfg in trainer.lr_scheduler_configs:
        opt = cfg.scheduler.optimizer
        entries.append((opt, cfg.name if cfg.name is not None else f"lr-{type(opt).__name__}", cfg.interval))
    scheduled = [opt for opt, _, _ in entries]
    for opt in trainer.optimizers:
        if not any(opt is o for o in scheduled):
            entries.append((opt, f"lr-{type(opt).__name__}", None))
    counts: dict[type, int] = {}
    out = []
    for i, (opt, name, interval) in enumerate(entries):
        named = i < len(trainer.lr_scheduler_configs) and trainer.lr_scheduler_configs[i].name is not None
        if not named:
            counts[type(opt)] = counts.get(type(opt), 0) + 1
        count = counts.get(type(opt), 0)
        if count > 1:
            name = f"{name}-{count - 1}"
        out.append((opt, _group_names(name, opt.param_groups), interval))
    return out


def _group_names(name: str, groups: list[dict[str, Any]]) -> list[str]:
    given = [g.get("name", f"pg{i}") for i, g in enumerate(groups, start=1)]
    duplicated = {n for n in given if given.count(n) > 1}
    if duplicated:
        raise ValueError(
            "A single `Optimizer` cannot have multiple parameter groups with identical `name` values. "
            f"{name} has duplicated parameter group names {duplicated}"
        )
    if len(groups) == 1:
        return [f"{name}/{groups[0]['name']}" if groups[0].get("name") else name]
    return [f"{name}/{n}" for n in given]
