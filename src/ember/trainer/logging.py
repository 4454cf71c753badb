"""The Trainer's side of ``self.log``: which stage is running, the result stores, the metric views
(``callback_metrics``, ``logged_metrics``, ``progress_bar_metrics``) and writing to loggers.

The running stage lives on :class:`LogContext`, a plain object the loops update where the stage
or hook level changes — never per call, never by inspecting frames.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ember.distributed import comms
from ember.loggers.send import send_metrics
from ember.module import logged_hyperparameters
from ember.trainer.results import LoggedValue, ResultStore, is_metric_object, resolve_reduce_fx, to_float_tensors

STAGES = ("train", "sanity_check", "validate", "test", "predict")

# Lightning's table of where ``self.log`` may be called (its ``_FxValidator``): hooks that refuse it,
# and hooks that log once per epoch (on_step must stay False, on_epoch True). Every other hook that
# runs inside a loop (the steps, the batch hooks, the backward and optimizer hooks) takes any level.
REFUSING_HOOKS = frozenset(
    {
        "setup", "teardown", "configure_model", "on_fit_start", "on_fit_end", "on_sanity_check_start",
        "on_sanity_check_end", "on_train_end", "on_validation_end", "on_test_end", "on_predict_start",
        "on_predict_end", "on_predict_epoch_start", "on_predict_epoch_end", "on_predict_batch_start",
        "on_predict_batch_end", "on_exception", "on_save_checkpoint", "on_load_checkpoint",
    }
)  # fmt: skip
EPOCH_LEVEL_HOOKS = frozenset(
    {
        "on_train_start", "on_validation_start", "on_test_start", "on_train_epoch_start", "on_train_epoch_end",
        "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    }
)  # fmt: skip


class LogContext:
    """Which stage and hook level is running, for ``self.log`` defaults and validation."""

    __slots__ = (
        "_bs", "_bs_batch", "dataloader_idx", "engine", "epoch_level", "hook", "multi_dataloader", "stage", "store",
    )  # fmt: skip

    def __init__(self) -> None:
        self.stage: str | None = None
        #: the refusing or epoch-level hook running, if any (set by :func:`guard_hook`; None in per-step hooks)
        self.hook: str | None = None
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
        ctx.store.reset()  # a fresh store per run: what on_*_start logs is kept for the epoch (as Lightning)
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
        enable_graph: bool = False,
        sync_dist_group: Any = None,
        rank_zero_only: bool = False,
    ) -> None:
        """``Module.log`` (its arguments are documented there): check, apply the running hook's
        defaults (Lightning's table, see ``REFUSING_HOOKS``) and record in the running stage's store."""
        ctx = self.ctx
        store = ctx.store
        hook = ctx.hook
        if store is None or (hook is not None and hook in REFUSING_HOOKS):
            raise RuntimeError(_refused(name, hook))
        if ctx.stage == "predict":
            raise RuntimeError(f"You can't `self.log({name!r})` while predicting: prediction hooks do not log")
        if type(name) is not str or not name:
            raise TypeError(f"self.log: name must be a non-empty string, got {name!r}")
        if add_dataloader_idx and "/dataloader_idx_" in name:
            raise ValueError(
                f"self.log({name!r}): the name must not hold '/dataloader_idx_' when add_dataloader_idx=True "
                "(the Trainer adds it with several loaders)"
            )
        if (
            type(value) is torch.Tensor and value.requires_grad and not value.is_leaf
            and value.dtype in _STORED_DTYPES and value.numel() == 1
        ):  # fmt: skip
            value = value.detach()  # the usual loss: checked here, one call less per step (check_value says why)
        else:
            value = check_value(name, value)
        if logger is None:
            logger = True
        elif logger and not self.loggers:
            warnings.warn(f"self.log({name!r}, ..., logger=True) was called but the Trainer has no logger", stacklevel=3)
        if rank_zero_only:  # as Lightning: such a value is never reduced over the processes
            sync_dist = False
        elif sync_dist and sync_dist_group is not None and self.sync is not None:
            raise NotImplementedError(
                f"self.log({name!r}, sync_dist_group={sync_dist_group!r}): Ember reduces logged values over all "
                "processes; leave sync_dist_group=None"
            )
        training = ctx.stage == "train"
        epoch_level = ctx.epoch_level
        if epoch_level:  # Lightning's table: epoch hooks take on_step=False and on_epoch=True only
            if on_step or on_epoch is False:
                raise ValueError(_level_refused(name, hook, "on_step=True" if on_step else "on_epoch=False"))
            on_step, on_epoch = False, True
        else:
            if on_step is None:
                on_step = training
            if on_epoch is None:
                on_epoch = not training
            if not (on_step or on_epoch):
                raise ValueError(
                    f"self.log({name!r}, on_step=False, on_epoch=False) would record nothing; set one of them to True"
                )
        reduce = resolve_reduce_fx(reduce_fx)
        if ctx.multi_dataloader and add_dataloader_idx and not epoch_level:  # epoch hooks span all loaders
            suffix = f"/dataloader_idx_{ctx.dataloader_idx}"
            name += suffix
        else:
            suffix = ""
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
            name if hook is None else (hook, name),  # as Lightning: one series per (hook, name), the later shown
            suffix,
        )  # fmt: skip

    # ---------------------------------------------------------------- views

    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """Latest value of everything logged: finished epochs' values, then live step values."""
        out = dict(self.callback)
        for store in self.stores.values():
            for v in store.values.values():
                if v.on_step and v.last is not None:
                    value = _as_tensor(v.last)
                    out[v.step_key] = value
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
                    live.append((v.step_key, v.last))
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
        if store.stage == "train":  # as Lightning: evaluation step values leave callback_metrics at its end;
            # logged_metrics holds the last step values, written or not; an epoch value of the same name wins
            self.logged.update({key: v.last for key, v in steps.items() if v.logger})
            for key, v in steps.items():
                self.callback[key] = _as_tensor(v.last)
                if not v.on_epoch:
                    self.callback[v.name] = self.callback[key]
        result: dict[str, float] = {}
        to_log: dict[str, float] = {}
        for key, f, tensor, (v, _) in zip(keys, floats, epoch_tensors, items.values()):
            self.callback[key] = tensor
            self.callback[v.name] = tensor
            if v.prog_bar:
                self.progress[key] = f
            if v.logger:
                to_log[key] = result[key] = f
                if v.dataloaders:
                    self.result_dataloaders[key] = frozenset(v.dataloaders)
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


def guard_hook(ctx: LogContext, name: str, fn: Callable) -> Callable:
    """``fn``, the hook ``name``, marking ``ctx.hook`` while it runs when ``name`` refuses ``self.log``
    or logs per epoch (so ``self.log`` can refuse or name the hook); ``fn`` itself for every other
    hook, so that the per-step hooks cost nothing more (docs/architecture.md, *Rules for speed*)."""
    if name not in REFUSING_HOOKS and name not in EPOCH_LEVEL_HOOKS:
        return fn

    def marked(*args: Any, **kwargs: Any) -> Any:
        saved, ctx.hook = ctx.hook, name
        try:
            return fn(*args, **kwargs)
        finally:
            ctx.hook = saved

    return marked


def _refused(name: str, hook: str | None) -> str:
    where = f"inside `{hook}`" if hook is not None else "outside the training, validation and test loops"
    return (
        f"You can't `self.log({name!r})` {where}: as in Lightning, only the steps and the train/validation/test "
        "start, epoch, batch, backward and optimizer hooks log (not setup, configure_optimizers, on_fit_start/end, "
        "on_train_end, on_*_end, the sanity check or checkpoint hooks). HINT: log to the logger directly "
        "(`self.logger.log_metrics(...)` or `self.logger.experiment`)."
    )


def _level_refused(name: str, hook: str | None, option: str) -> str:
    where = f"`{hook}`" if hook is not None else "an epoch-level hook"
    return (
        f"You can't `self.log({name!r}, {option})` inside {where}: it runs once per epoch, so what it logs is "
        "an epoch value (on_step=False, on_epoch=True; leave both unset)"
    )


def check_value(name: str, value: Any) -> Any:
    """What ``self.log`` stores for ``value``: a number as it is; a one-element tensor detached, as a
    floating-point tensor (integers, bool and half precision become float32, as in Lightning) and
    copied when it is a leaf that may change in place later (a parameter, a buffer, a running total:
    the value is the one at the call, as in Lightning) — values computed in the step are not copied;
    a torchmetrics ``Metric`` as it is. Anything else raises a ValueError naming the type."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"self.log({name!r}, ...): the tensor must have a single element, got shape {tuple(value.shape)}; "
                f"you can log its mean instead: self.log({name!r}, value.mean())"
            )
        if value.dtype not in _STORED_DTYPES:
            return value.detach().float()
        if value.is_leaf and not value.is_inference():
            return value.detach().clone()
        return value.detach() if value.requires_grad else value
    if isinstance(value, numbers.Real) or is_metric_object(value):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    hint = "; use self.log_dict for a dict" if isinstance(value, dict) else ""
    raise ValueError(
        f"self.log({name!r}, {shown}): `{type(value).__name__}` values cannot be logged; log a number, a "
        f"one-element tensor or a torchmetrics Metric{hint}"
    )


_STORED_DTYPES = (torch.float32, torch.float64)


def _infer_batch_size(batch: Any) -> int:
    """The batch size ``self.log`` weighs epoch means with, as Lightning finds it: the first dimension
    of the first tensor met walking the batch (dicts by value, sequences, dataclasses); 1 for a
    0-d tensor or a batch without tensors."""
    size = _first_tensor_size(batch)
    return 1 if size is None else size


def _first_tensor_size(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, str):
        return None
    if isinstance(batch, Mapping):
        batch = batch.values()
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    elif not isinstance(batch, Iterable) or isinstance(batch, (bytes, torch.nn.Module)):
        return None
    for item in batch:
        size = _first_tensor_size(item)
        if size is not None:
            return size
    return None


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
