"""``LearningRateMonitor``: log every optimizer's learning rate (and optionally momentum and weight
decay) to the Trainer's loggers, under Lightning's names."""

from __future__ import annotations

from typing import Any

from ember.callbacks.callback import Callback
from ember.loggers.send import send_metrics

_INTERVALS = (None, "step", "epoch")


class LearningRateMonitor(Callback):
    """Log learning rates while training.

    Names follow Lightning: ``lr-<OptimizerClass>`` (``lr-Adam``; a second ``Adam`` is
    ``lr-Adam-1``), or the scheduler config's ``"name"``; with several parameter groups,
    ``<name>/pg1``, ``<name>/pg2``, ... (or the group's own ``"name"``). ``log_momentum`` adds
    ``<name>-momentum`` (``betas[0]`` for Adam-like optimizers) and ``log_weight_decay``
    ``<name>-weight_decay``.

    Args:
        logging_interval: "step": at every ``log_every_n_steps``-th batch, with the step its loss
            is logged at (the rate the batch was trained with); "epoch": at each epoch start;
            None: optimizers with a step-interval scheduler per step, the others per epoch.

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
        self._names: list[tuple[Any, str, str]] = []  # (optimizer, name, interval)
        self._pending: dict[str, Any] | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Name each optimizer's rates (see the class docstring); raises ``ValueError`` when the Trainer
        has no logger (unless ``fast_dev_run`` turned the loggers off)."""
        if not trainer.loggers and not getattr(trainer, "fast_dev_run", 0):  # fast_dev_run turns loggers off
            raise ValueError("LearningRateMonitor needs a logger: the Trainer was built with logger=False")
        self._names = self._optimizer_names(trainer)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Unless ``logging_interval="step"``: send the epoch-interval rates (all of them with
        ``"epoch"``) to the loggers at the current global step."""
        if self.logging_interval != "step":
            stats = self._stats("epoch" if self.logging_interval is None else "any")
            if stats:
                send_metrics(trainer.loggers, stats, trainer.global_step)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Unless ``logging_interval="epoch"``, on every ``log_every_n_steps``-th batch: read the rates
        this batch trains with (step-interval ones with None, all with ``"step"``) to write at its end."""
        if self.logging_interval != "epoch" and trainer.train_engine.state.iteration % trainer.log_every_n_steps == 0:
            self._pending = self._stats("step" if self.logging_interval is None else "any")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Send the rates read at this batch's start to the loggers, at ``trainer.global_step`` as it is
        after the batch's optimizer step."""
        # written here, after the optimizer step, so the rate a batch used is logged at that batch's step
        if self._pending:
            send_metrics(trainer.loggers, self._pending, trainer.global_step)
        self._pending = None

    def _stats(self, interval: str) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for optimizer, name, opt_interval in self._names:
            if interval != "any" and opt_interval != interval:
                continue
            groups = optimizer.param_groups
            for i, group in enumerate(groups):
                key = name if len(groups) == 1 else f"{name}/{group.get('name', f'pg{i + 1}')}"
                stats[key] = group["lr"]
                if self.log_momentum:
                    stats[f"{key}-momentum"] = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
                if self.log_weight_decay:
                    stats[f"{key}-weight_decay"] = group.get("weight_decay", 0.0)
        return stats

    @staticmethod
    def _optimizer_names(trainer: Any) -> list[tuple[Any, str, str]]:
        scheduled = {}
        for cfg in trainer.lr_scheduler_configs:
            optimizer = getattr(cfg.scheduler, "optimizer", None)
            if optimizer is not None and id(optimizer) not in scheduled:
                scheduled[id(optimizer)] = (cfg.name, cfg.interval)
        out = []
        seen: dict[str, int] = {}
        for optimizer in trainer.optimizers:
            given, interval = scheduled.get(id(optimizer), (None, "epoch"))
            name = given or f"lr-{type(optimizer).__name__}"
            count = seen.get(name, 0)
            seen[name] = count + 1
            out.append((optimizer, name if count == 0 else f"{name}-{count}", interval))
        return out
