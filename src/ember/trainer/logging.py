"""The Trainer's side of ``self.log``: which stage is running, the result stores, the metric views
(``callback_metrics``, ``logged_metrics``, ``progress_bar_metrics``) and writing to loggers.

The running stage lives on :class:`LogContext`, a plain object the loops update where the stage
or hook level changes — never per call, never by inspecting frames.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from ember.distributed import comms
from ember.loggers.send import send_metrics
from ember.module import logged_hyperparameters
from ember.trainer.results import LoggedValue, ResultStore, is_metric_object, resolve_reduce_fx, to_float_tensors

STAGES = ("train", "sanity_check", "validate", "test", "predict")


class LogContext:
    """Which stage and hook level is running, for ``self.log`` defaults and validation."""

    __slots__ = ("_bs", "_bs_batch", "dataloader_idx", "engine", "epoch_level", "multi_dataloader", "stage", "store")

    def __init__(self) -> None:
        self.stage: str | None = None
        self.store: ResultStore | None = None
        self.epoch_level = False
        self.dataloader_idx = 0
        self.multi_dataloader = False
        self.engine: Any = None
        self._bs_batch: Any = None
        self._bs = 1

    def batch_size(self) -> int:
        """The size of the current batch (first dimension of its first tensor), cached per batch."""
        batch = self.engine.state.batch if self.engine is not None else None
        if batch is not self._bs_batch:
            self._bs_batch = batch
            self._bs = _infer_batch_size(batch)
        return self._bs


def _infer_batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        for v in batch.values():
            return _infer_batch_size(v)
    if isinstance(batch, (list, tuple)) and batch:
        return _infer_batch_size(batch[0])
    return 1


class TrainerLogging:
    """Owns the result stores and the metric views of one Trainer."""

    def __init__(self) -> None:
        self.ctx = LogContext()
        self.loggers: list[Any] = []
        self.stores: dict[str, ResultStore] = {}
        self.callback: dict[str, torch.Tensor] = {}
        self.logged: dict[str, Any] = {}
        self.progress: dict[str, float] = {}
        self._progress_sources: dict[str, LoggedValue] = {}
        self.enabled = True  # False while sanity checking: nothing reaches loggers or metrics
        self.result_dataloaders: dict[str, frozenset[int]] = {}
        # set by a distributed strategy: sync([(name, tensor, reduce_fx, weight), ...]) -> the tensors
        # reduced over the processes (see ParallelStrategy.sync_logged)
        self.sync: Any = None

    # ---------------------------------------------------------------- stage switching

    def store_for(self, stage: str) -> ResultStore:
        store = self.stores.get(stage)
        if store is None:
            store = self.stores[stage] = ResultStore(stage)
        return store

    def enter(self, stage: str, engine: Any, multi_dataloader: bool = False) -> tuple:
        """Make ``stage`` the running one; returns the previous context for :meth:`restore`."""
        ctx = self.ctx
        saved = (ctx.stage, ctx.store, ctx.epoch_level, ctx.dataloader_idx, ctx.multi_dataloader, ctx.engine)
        ctx.stage, ctx.store, ctx.engine = stage, self.store_for(stage), engine
        ctx.epoch_level, ctx.dataloader_idx, ctx.multi_dataloader = True, 0, multi_dataloader
        return saved

    def restore(self, saved: tuple) -> None:
        ctx = self.ctx
        ctx.stage, ctx.store, ctx.epoch_level, ctx.dataloader_idx, ctx.multi_dataloader, ctx.engine = saved

    # ---------------------------------------------------------------- self.log

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool,
        logger: bool,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: Any,
        sync_dist: bool,
        batch_size: int | None,
        add_dataloader_idx: bool,
    ) -> None:
        ctx = self.ctx
        store = ctx.store
        if store is None:
            raise RuntimeError(f"self.log({name!r}) was called outside fit/validate/test/predict")
        if ctx.stage == "predict":
            raise RuntimeError(f"self.log({name!r}) is not supported while predicting")
        if type(name) is not str or not name:
            raise TypeError(f"self.log: name must be a non-empty string, got {name!r}")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"self.log({name!r}): value must be a scalar, got a tensor of shape {tuple(value.shape)}"
                )
            if value.requires_grad:
                value = value.detach()
        elif not (isinstance(value, numbers.Real) or is_metric_object(value)):
            raise TypeError(
                f"self.log({name!r}): value must be a number, a scalar tensor or a torchmetrics Metric, "
                f"got {type(value).__name__}"
            )
        training = ctx.stage == "train"
        epoch_level = ctx.epoch_level
        if on_step is None:
            on_step = training and not epoch_level
        elif on_step and epoch_level:
            raise ValueError(
                f"self.log({name!r}, on_step=True) is not allowed in an epoch-level hook; log it with on_epoch=True"
            )
        if on_epoch is None:
            on_epoch = not training or epoch_level
        if not (on_step or on_epoch):
            raise ValueError(f"self.log({name!r}): on_step and on_epoch are both False, so it would never be recorded")
        reduce = resolve_reduce_fx(reduce_fx)
        if ctx.multi_dataloader and add_dataloader_idx and not epoch_level:  # epoch hooks span all loaders
            name = f"{name}/dataloader_idx_{ctx.dataloader_idx}"
        if on_epoch and reduce == "mean":
            weight = ctx.batch_size() if batch_size is None else batch_size
        else:
            weight = 1
        step_value = None
        if sync_dist and on_step and self.sync is not None and isinstance(value, (torch.Tensor, numbers.Real)):
            # as Lightning: the step value is reduced when it is logged, so callback_metrics, the bar
            # and the loggers show the same reduced value on every rank (one all_reduce per call, and
            # only for values logged with sync_dist=True; the epoch value is synced at epoch end)
            step_value = _reduce_over_processes(value, reduce)
        store.log(
            name, value, on_step, on_epoch, prog_bar, logger, reduce, sync_dist, weight,
            ctx.dataloader_idx if ctx.multi_dataloader and not epoch_level else None,  # epoch hooks span all
            step_value,
        )  # fmt: skip

    # ---------------------------------------------------------------- views

    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """Latest value of everything logged: finished epochs' values, then live step values."""
        out = dict(self.callback)
        for store in self.stores.values():
            for v in store.values.values():
                if v.on_step and v.last is not None:
                    value = _as_tensor(v.last)
                    out[v.name + "_step" if v.on_epoch else v.name] = value
                    if not v.on_epoch:
                        out[v.name] = value
            if self.ctx.store is store and self.ctx.epoch_level:
                for key, (v, value) in store.epoch_values().items():
                    out[key] = _as_tensor(value)
                    out[v.name] = out[key]
        return out

    def progress_bar_metrics(self) -> dict[str, float]:
        """``prog_bar`` values as floats (one host transfer for everything pending)."""
        live = []
        for store in self.stores.values():
            for v in store.values.values():
                if v.prog_bar and v.on_step and v.last is not None:
                    live.append((v.name + "_step" if v.on_epoch else v.name, v.last))
        if live:
            floats = to_float_tensors([val for _, val in live])
            for (key, _), f in zip(live, floats):
                self.progress[key] = f
        return dict(self.progress)

    # ---------------------------------------------------------------- writing

    def flush_steps(self, step: int, epoch: int | None = None) -> None:
        """Send pending step values of the running stage to the loggers: as tensors to loggers that
        take them (``accepts_tensors``; they move values to the host when they write), as floats
        (one transfer) to the others."""
        store = self.ctx.store
        if store is None or not store.step_dirty:
            return
        store.step_dirty = False
        pending = store.step_values()
        metrics = {}
        for key, v in pending.items():  # one pass: this runs every log_every_n_steps steps
            v.step_pending = False
            if v.logger:
                metrics[key] = v.last
        if not metrics or not self.enabled:
            return
        self.logged.update(metrics)  # (sync_dist step values were reduced when they were logged)
        if epoch is not None:  # as Lightning: the loggers get the epoch on every training row
            metrics["epoch"] = epoch
        send_metrics(self.loggers, metrics, step)

    def finish_epoch(self, store: ResultStore, step: int, epoch: int | None) -> dict[str, float]:
        """Reduce ``store``'s epoch values into the views and the loggers; returns the logged ones as
        floats, by the keys they were logged under (``result_dataloaders`` says which eval loaders
        logged each, when there are several)."""
        self.result_dataloaders = {}
        if not self.enabled:
            store.reset()
            return {}
        items = store.epoch_values()
        steps = store.step_values(only_pending=False)
        keys = list(items)
        # the last step values shown in the bar stay there after the store is reset (as in Lightning)
        bar_steps = [(key, v.last) for key, v in steps.items() if v.prog_bar]
        epoch_tensors = [_as_tensor(value) for _, value in items.values()]
        if self.sync is not None:
            # an epoch mean is weighted by each process's batch sizes: the mean over all samples
            synced = self._synced(
                [(k, v, t, v.weight_total) for (k, (v, _)), t in zip(items.items(), epoch_tensors) if v.sync_dist]
            )
            epoch_tensors = [synced.get(k, t) for k, t in zip(keys, epoch_tensors)]
        values = epoch_tensors + [last for _, last in bar_steps]
        floats = to_float_tensors(values) if values else []  # one transfer for everything
        for (key, _), f in zip(bar_steps, floats[len(keys) :]):
            self.progress[key] = f
        result: dict[str, float] = {}
        to_log: dict[str, float] = {}
        for key, f, tensor, (v, _) in zip(keys, floats, epoch_tensors, items.values()):
            self.callback[key] = tensor
            self.callback[v.name] = tensor
            if v.prog_bar:
                self.progress[v.name] = f
            if v.logger:
                to_log[key] = result[key] = f
                if v.dataloaders:
                    self.result_dataloaders[key] = frozenset(v.dataloaders)
        if store.stage == "train":  # as Lightning: evaluation step values leave callback_metrics at its end
            # and logged_metrics holds the last step values, written or not
            self.logged.update({key: v.last for key, v in steps.items() if v.logger})
            for key, v in steps.items():
                self.callback[key] = _as_tensor(v.last)
                if not v.on_epoch:
                    self.callback[v.name] = self.callback[key]
        if to_log:
            self.logged.update(to_log)
            if epoch is not None:  # as Lightning: the loggers get the epoch (not logged_metrics)
                to_log["epoch"] = epoch
            send_metrics(self.loggers, to_log, step)
        store.reset()
        return result

    def _synced(self, entries: list[tuple[str, LoggedValue, Any, float]]) -> dict[str, torch.Tensor]:
        """``(key, logged value, value, weight)`` entries reduced across processes with their
        ``reduce_fx`` by ``self.sync``, all in one go (one collective per kind of reduction); called
        at epoch end (step values are reduced when logged, see :meth:`log`). torchmetrics objects sync themselves in
        ``compute()`` and are left alone."""
        entries = [e for e in entries if e[1].metric is None]
        if not entries:
            return {}
        values = self.sync([(key, _as_tensor(value), v.reduce, weight) for key, v, value, weight in entries])
        return {key: value for (key, _, _, _), value in zip(entries, values)}

    def restore_callback_metrics(self, values: dict[str, float]) -> None:
        """``callback_metrics`` as a checkpoint recorded them (what monitors compare against on resume)."""
        self.callback.update({k: torch.tensor(v) for k, v in values.items()})

    def save_loggers(self) -> None:
        for lg in self.loggers:
            lg.save()

    def reset_views(self) -> None:
        self.stores.clear()
        self.callback.clear()
        self.logged.clear()
        self.progress.clear()


def _reduce_over_processes(value: Any, reduce: str) -> torch.Tensor:
    """``value`` (a number or a scalar tensor) reduced over all processes with ``reduce``; a mean
    is the plain mean of the processes' values, as Lightning's step values."""
    tensor = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    if not tensor.is_floating_point():
        tensor = tensor.float()
    out = comms.all_reduce(tensor, "SUM" if reduce in ("mean", "sum") else reduce.upper())
    return out / comms.get_world_size() if reduce == "mean" else out


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def log_hyperparams(loggers: list[Any], model: Any, datamodule: Any) -> None:
    """Send the model's and the datamodule's hyperparameters to the loggers (those saved with ``logger=True``)."""
    if not loggers:
        return
    params = logged_hyperparameters(model)
    dm_params = logged_hyperparameters(datamodule)
    clash = sorted(k for k, v in dm_params.items() if k in params and params[k] != v)
    if clash:
        raise ValueError(
            f"the model and the datamodule both have hyperparameters {clash} with different values; "
            "rename one, or call save_hyperparameters(logger=False) on one of them"
        )
    params.update(dm_params)
    if params:
        for lg in loggers:
            lg.log_hyperparams(params)
