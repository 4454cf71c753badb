"""Where ``self.log`` puts values: a per-stage store that keeps tensors on their device.

Logging costs a dictionary lookup and a list append per call; values move to the host only when
they are shown or written (log interval, progress-bar refresh, epoch end), all pending values of a
store in one transfer (docs/architecture.md, "Rules for speed" 1). Epoch values are reduced with ``reduce_fx`` and weighted by
batch size for the mean, folding the pending list into running tensors every ``_FOLD_EVERY`` values
so memory stays bounded over long epochs.
"""

from __future__ import annotations

from typing import Any

import torch

_REDUCE_NAMES = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_REDUCE_NAMES.update({k.upper(): v for k, v in _REDUCE_NAMES.items()})  # Lightning takes "SUM" as well
# torch's reductions and Python's built-ins (Lightning accepts both)
_REDUCE_CALLABLES = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min", sum: "sum", max: "max", min: "min"}
_FOLD_EVERY = 256


def resolve_reduce_fx(reduce_fx: Any) -> str:
    name = _REDUCE_NAMES.get(reduce_fx) if isinstance(reduce_fx, str) else _REDUCE_CALLABLES.get(reduce_fx)
    if name is None:
        raise ValueError(
            f"reduce_fx={reduce_fx!r} is not supported; use 'mean', 'sum', 'max', 'min' or torch.mean/sum/max/min "
            "(for another reduction, log a torchmetrics Metric)"
        )
    return name


def is_metric_object(value: Any) -> bool:
    """A torchmetrics-style metric: something with ``compute`` and ``reset``."""
    return hasattr(value, "compute") and hasattr(value, "reset") and not isinstance(value, torch.Tensor)


def to_float_tensors(values: list[Any]) -> list[float]:
    """Move a list of scalars (tensors on any device, Python numbers) to the host in one transfer
    per device, returning Python floats."""
    out: list[float | None] = [None] * len(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
        else:
            out[i] = float(v)
    for idxs in by_device.values():
        stacked = torch.stack([values[i].reshape(()).to(torch.float64) for i in idxs]).tolist()
        for i, f in zip(idxs, stacked):
            out[i] = f
    return out  # type: ignore[return-value]


def _scalar_metric_value(name: str, metric: Any) -> Any:
    """``metric.compute()``, which ``self.log`` needs to be a scalar."""
    value = metric.compute()
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(
            f"self.log({name!r}, {type(metric).__name__}): compute() returned a tensor of shape {tuple(value.shape)}; "
            "self.log takes scalar metrics (e.g. average='macro' or 'micro' instead of per-class values)"
        )
    if isinstance(value, dict):
        raise ValueError(
            f"self.log({name!r}, {type(metric).__name__}): compute() returned a dict; use self.log_dict(...)"
        )
    return value


class LoggedValue:
    """Everything logged under one name in one stage run."""

    __slots__ = (
        "dataloaders",
        "epoch_key",
        "last",
        "logger",
        "metric",
        "name",
        "on_epoch",
        "on_step",
        "pending",
        "prog_bar",
        "reduce",
        "step_key",
        "step_pending",
        "sync_dist",
        "total",
        "weight_total",
        "weights",
    )

    def __init__(
        self,
        name: str,
        on_step: bool,
        on_epoch: bool,
        prog_bar: bool,
        logger: bool,
        reduce: str,
        sync_dist: bool,
        suffix: str = "",
    ):
        self.name = name  # with the dataloader suffix, if any
        # the keys of the views: ``name_step``/``name_epoch`` when logged both ways, before the suffix
        # (``loss_epoch/dataloader_idx_0``, as Lightning)
        base = name[: len(name) - len(suffix)]
        self.step_key = f"{base}_step{suffix}" if on_step and on_epoch else name
        self.epoch_key = f"{base}_epoch{suffix}" if on_step and on_epoch else name
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.prog_bar = prog_bar
        self.logger = logger
        self.reduce = reduce
        self.sync_dist = sync_dist
        self.last: Any = None
        self.step_pending = False
        self.pending: list[Any] = []
        self.weights: list[float] = []
        self.total: torch.Tensor | None = None
        self.weight_total = 0.0
        self.metric: Any = None
        self.dataloaders: set[int] = set()  # with several eval loaders: which ones logged it

    def add_epoch_value(self, value: Any, weight: float) -> None:
        self.pending.append(value)
        self.weights.append(weight)
        if len(self.pending) >= _FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        vals = self.pending
        ref = next((v for v in vals if isinstance(v, torch.Tensor)), None)
        device = ref.device if ref is not None else torch.device("cpu")
        # float32, or float64 when a value is (as Lightning's accumulation promotes)
        double = any(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in vals)
        dtype = torch.float64 if double else torch.float32
        stacked = torch.stack([torch.as_tensor(v, device=device).reshape(()).to(dtype) for v in vals])
        if self.reduce == "mean":
            # weights are host floats: scale on the device one by one (no host-to-device copy, no sync)
            part = torch.stack([value * w for value, w in zip(stacked.unbind(), self.weights)]).sum()
            self.weight_total += sum(self.weights)
        elif self.reduce == "sum":
            part = stacked.sum()
        elif self.reduce == "max":
            part = stacked.max()
        else:
            part = stacked.min()
        if self.total is None:
            self.total = part
        elif self.reduce in ("mean", "sum"):
            self.total = self.total + part.to(self.total.device)
        elif self.reduce == "max":
            self.total = torch.maximum(self.total, part.to(self.total.device))
        else:
            self.total = torch.minimum(self.total, part.to(self.total.device))
        self.pending = []
        self.weights = []

    def epoch_value(self) -> Any:
        """The reduced epoch value (a tensor on the logging device), or None if nothing was logged."""
        if self.metric is not None:
            return _scalar_metric_value(self.name, self.metric)
        self._fold()
        if self.total is None:
            return None
        if self.reduce == "mean":
            return self.total / max(self.weight_total, 1e-12)
        return self.total


class ResultStore:
    """The values one stage (train, validate, test, ...) logged during its current epoch."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.values: dict[str, LoggedValue] = {}
        self.step_dirty = False

    def reset(self) -> None:
        for v in self.values.values():
            if v.metric is not None:
                v.metric.reset()
        self.values = {}
        self.step_dirty = False

    def log(
        self,
        name: str,
        value: Any,
        on_step: bool,
        on_epoch: bool,
        prog_bar: bool,
        logger: bool,
        reduce: str,
        sync_dist: bool,
        batch_size: float,
        dataloader_idx: int | None = None,
        step_value: Any = None,
        key: Any = None,
        suffix: str = "",
    ) -> None:
        """Record one ``self.log`` call; ``step_value`` (when given) is the value the step views show
        instead of ``value`` (``sync_dist``: reduced over the processes; ``value`` stays this process's
        own for the epoch reduction, which is synced once at epoch end). ``key`` (default ``name``)
        tells series apart: the epoch hooks log under ``(hook, name)``, so that a name logged by a
        step and by an epoch hook makes two series, the one logged first shown first."""
        if key is None:
            key = name
        entry = self.values.get(key)
        if entry is None:
            entry = self.values[key] = LoggedValue(
                name, on_step, on_epoch, prog_bar, logger, reduce, sync_dist, suffix
            )
        if dataloader_idx is not None:
            entry.dataloaders.add(dataloader_idx)
        # tensors and numbers first: hasattr() probes on a tensor raise and catch AttributeError (slow)
        if entry.metric is not None or (not isinstance(value, (torch.Tensor, float, int)) and is_metric_object(value)):
            entry.metric = value
            value = getattr(value, "_forward_cache", None)
            if value is None:
                return
        if on_step:
            entry.last = value if step_value is None else step_value
            entry.step_pending = True
            self.step_dirty = True
        if on_epoch and entry.metric is None:
            entry.add_epoch_value(value, batch_size)

    def step_values(self, only_pending: bool = True) -> dict[str, Any]:
        """Latest step values (``name_step`` when the name is also logged per epoch)."""
        out = {}
        for v in self.values.values():
            if v.on_step and v.last is not None and (v.step_pending or not only_pending):
                out[v.step_key] = v
        return out

    def epoch_values(self) -> dict[str, Any]:
        """Reduced epoch values keyed as they are logged (``name_epoch`` when also logged per step)."""
        out = {}
        for v in self.values.values():
            if v.on_epoch:
                value = v.epoch_value()
                if value is not None:
                    out[v.epoch_key] = (v, value)
        return out
