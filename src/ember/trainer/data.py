"""Where a stage's data comes from, how much of it is used, and how several loaders are chained."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler

from ember.trainer.hooks import overrides
from ember.utilities import CombinedLoader

LOADER_METHODS = {
    "train": "train_dataloader",
    "validate": "val_dataloader",
    "test": "test_dataloader",
    "predict": "predict_dataloader",
}


def _provides(obj: Any, method: str) -> bool:
    from ember.datamodule import DataModule
    from ember.module import Module

    if obj is None or not callable(getattr(obj, method, None)):
        return False
    if callable(getattr(obj, "__dict__", {}).get(method)):  # assigned on the instance (from_datasets)
        return True
    base = DataModule if isinstance(obj, DataModule) else Module
    return not hasattr(base, method) or overrides(obj, method, base)


def find_loaders(stage: str, explicit: Any, datamodule: Any, module: Any) -> Any:
    """The loaders for ``stage``: given explicitly, else from the datamodule, else from the module."""
    if explicit is not None:
        return explicit
    method = LOADER_METHODS[stage]
    for source in (datamodule, module):
        if _provides(source, method):
            return getattr(source, method)()
    return None


def as_loader_list(loaders: Any, what: str) -> list[Any]:
    """One loader or a list/tuple of them, as a list; anything not iterable raises ``TypeError``."""
    if loaders is None:
        return []
    items = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    for i, loader in enumerate(items):
        if not isinstance(loader, Iterable):
            raise TypeError(f"{what}[{i}] must be an iterable such as a DataLoader, got {type(loader).__name__}")
    return items


def _loader_list(loaders: Any, what: str) -> list[Any]:
    """Evaluation loaders as a list: a dict's values (as Lightning's sequential CombinedLoader), a
    list/tuple, or one loader."""
    return as_loader_list(list(loaders.values()) if isinstance(loaders, dict) else loaders, what)


def check_limit(name: str, value: Any) -> int | float:
    """``limit_*_batches``: a fraction in [0, 1] or a non-negative number of batches."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float fraction in [0.0, 1.0] or an int number of batches, got {value!r}")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r}: a float must be a fraction in [0.0, 1.0] (use an int for a batch count)")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name}={value!r}: a batch count must be >= 0")
    return value


def sized_length(loader: Any) -> int | None:
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return None


def num_batches(loader: Any, limit: int | float, name: str) -> int | None:
    """Batches used per epoch (None: until the data ends)."""
    length = sized_length(loader)
    if isinstance(limit, float):
        if length is None:
            if limit not in (0.0, 1.0):
                raise ValueError(
                    f"{name}={limit} is a fraction, but the loader has no length; give an int number of batches"
                )
            return 0 if limit == 0.0 else None
        n = int(length * limit)
        return max(n, 1) if limit > 0 and length > 0 else n
    return limit if length is None else min(length, limit)


class Batches:
    """A :class:`~ember.utilities.CombinedLoader` as the loops read it: the batches of its
    ``(batch, batch_idx, dataloader_idx)`` triples."""

    def __init__(self, combined: CombinedLoader) -> None:
        self.combined = combined

    def __iter__(self) -> Iterator:
        return (batch for batch, _, _ in self.combined)

    def __len__(self) -> int:
        return len(self.combined)


def inner_loaders(data: Any) -> list[Any]:
    """The loaders behind the training data (a CombinedLoader's, a limited loader's), for their samplers."""
    if isinstance(data, Batches):
        return list(data.combined.flattened)
    if isinstance(data, Limited):
        return [data.loader]
    return [data]


def sequential_loaders(loaders: list[Any], prefix: str) -> list[Any]:
    """``overfit_batches``: every loader reading its samples in order, as Lightning turns shuffling
    off (with its warning) when some loader does not."""
    if all(not isinstance(dl, DataLoader) or isinstance(dl.sampler, SequentialSampler) for dl in loaders):
        return loaders
    warnings.warn(
        f"You requested to overfit but enabled {prefix} dataloader shuffling. "
        f"We are turning off the {prefix} dataloader shuffling for you.",
        stacklevel=4,
    )
    return [_in_order(dl) for dl in loaders]


def _in_order(loader: Any) -> Any:
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    if isinstance(loader.sampler, SequentialSampler) or loader.batch_size is None:
        return loader  # (a batch sampler of the user's own decides the order itself)
    sampler = SequentialSampler(loader.dataset)
    # DataLoader forbids setting these after construction only to keep them consistent with each
    # other; they are replaced together, as DataLoader(..., sampler=sampler) would set them
    new = copy.copy(loader)
    object.__setattr__(new, "sampler", sampler)
    object.__setattr__(new, "batch_sampler", BatchSampler(sampler, loader.batch_size, loader.drop_last))
    return new


def _prepared(trainer: Any, loaders: list[Any], training: bool, prefix: str, fitting: bool) -> list[Any]:
    """Loaders in order for ``overfit_batches`` (in fit), then split over the processes."""
    if trainer.overfit_batches and fitting:
        loaders = sequential_loaders(loaders, prefix)
    if trainer.use_distributed_sampler and trainer.world_size > 1:
        loaders = [distributed_loader(dl, trainer.strategy, training) for dl in loaders]
    return loaders


def _limit_combined(combined: CombinedLoader, limit: int | float, name: str) -> int | None:
    counts = [num_batches(dl, limit, name) for dl in combined.flattened]
    combined.limits = [math.inf if c is None else c for c in counts]
    return sized_length(combined)


def train_data(trainer: Any, loader: Any) -> tuple[Any, int | None, int | None]:
    """The training data of a fit as the train engine iterates it (a list/tuple/dict of loaders is
    a ``max_size_cycle`` CombinedLoader, as in Lightning), the epoch length (None: the data decides)
    and ``num_training_batches`` (None: unknown)."""
    if isinstance(loader, (list, tuple, dict)):
        loader = CombinedLoader(loader, "max_size_cycle")
    as_loader_list(loader, "train_dataloaders")
    limit = trainer.limits["train"]
    if isinstance(loader, CombinedLoader):
        if loader.mode == "sequential":  # as Lightning
            raise ValueError(
                'a CombinedLoader in mode="sequential" cannot be training data; use "min_size", "max_size_cycle" '
                'or "max_size"'
            )
        loader.flattened = _prepared(trainer, loader.flattened, True, "train", True)
        n = _limit_combined(loader, limit, "limit_train_batches")
        return Batches(loader), n, n
    loader = _prepared(trainer, [loader], True, "train", True)[0]
    n = num_batches(loader, limit, "limit_train_batches")
    if sized_length(loader) is None and n is not None:
        return Limited(loader, n), None, n
    return loader, n, n


def eval_data(trainer: Any, loaders: Any, stage: str, fitting: bool = False) -> tuple[list[Any], list[int | None]]:
    """An evaluation stage's loaders and the batches to use of each: a ``sequential``
    CombinedLoader (or a list/dict of loaders) gives one loader per iterable; a CombinedLoader in
    another mode is one loader of combined batches, as in Lightning."""
    prefix = {"validate": "val"}.get(stage, stage)
    name, limit = f"limit_{prefix}_batches", trainer.limits[stage]
    if isinstance(loaders, CombinedLoader) and loaders.mode != "sequential":
        loaders.flattened = _prepared(trainer, loaders.flattened, False, prefix, fitting)
        return [Batches(loaders)], [_limit_combined(loaders, limit, name)]
    if isinstance(loaders, CombinedLoader):
        loaders = loaders.flattened
    found = _prepared(trainer, _loader_list(loaders, f"{prefix}_dataloaders"), False, prefix, fitting)
    return found, [num_batches(dl, limit, name) for dl in found]


class Limited:
    """Iterates over at most ``n`` batches of ``loader`` (for loaders without a length)."""

    def __init__(self, loader: Iterable, n: int) -> None:
        self.loader = loader
        self.n = n

    def __iter__(self) -> Iterator:
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                return
            yield batch


class EvalData:
    """Several evaluation loaders chained into one epoch; ``dataloader_idx`` and ``batch_idx`` say
    where the batch just yielded came from."""

    def __init__(self, loaders: Sequence[Any], counts: Sequence[int | None]) -> None:
        self.loaders = list(loaders)
        self.counts = list(counts)
        self.dataloader_idx = 0
        self.batch_idx = -1
        known = all(c is not None for c in self.counts)
        self.total: int | None = sum(self.counts) if known else None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        for idx, (loader, count) in enumerate(zip(self.loaders, self.counts)):
            if count == 0:
                continue
            self.dataloader_idx = idx
            for b, batch in enumerate(loader):
                if count is not None and b >= count:
                    break
                self.batch_idx = b
                yield batch


def val_check_batch(val_check_interval: int | float, train_batches: int | None, every_n_epochs: int | None) -> int | None:
    """Every how many training batches validation runs (as Lightning's ``trainer.val_check_batch``);
    None: at the end of each epoch only (a fraction of 1.0, or an epoch of unknown length)."""
    if isinstance(val_check_interval, float):
        if train_batches is None:
            if val_check_interval == 1.0:
                return None
            raise ValueError(
                f"val_check_interval={val_check_interval} is a fraction, but the training loader has no length; "
                "give an int number of batches"
            )
        batches = max(1, int(train_batches * val_check_interval))
        return None if batches == train_batches else batches
    if every_n_epochs is not None and train_batches is not None and val_check_interval > train_batches:
        raise ValueError(
            f"val_check_interval={val_check_interval} is more than the {train_batches} training batches of an epoch; "
            "use at most that many, set limit_val_batches=0 to turn validation off, or check_val_every_n_epoch=None "
            "to count batches across epochs"
        )
    if every_n_epochs is not None and val_check_interval == train_batches:
        return None
    return val_check_interval


def distributed_loader(loader: Any, strategy: Any, training: bool) -> Any:
    """``loader`` split over the processes of ``strategy``, keeping its own sampling (shuffle,
    generator seed, drop_last; see ember.distributed.sampler)."""
    import torch

    from ember.distributed.sampler import distribute_loader

    seed = None
    if getattr(getattr(loader, "sampler", None), "generator", False) is None:
        # random order from the global RNG: every rank draws (keeping their RNGs in step), rank 0's seed wins
        seed = strategy.broadcast(int(torch.randint(0, 2**62, ()).item()))
    pad_eval = getattr(strategy, "pad_eval_shards", False)
    return distribute_loader(loader, strategy.world_size, strategy.global_rank, training, pad_eval=pad_eval, seed=seed)


TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def _transfer_hook(name: str, module: Any, datamodule: Any) -> Any:
    """The overridden ``name`` to call: the datamodule's wins over the module's, as in Lightning
    (with its warnings); None when neither overrides it."""
    from ember.datamodule import DataModule
    from ember.module import Module

    on_module = overrides(module, name, Module)
    if datamodule is not None and overrides(datamodule, name, DataModule):
        if on_module:
            warnings.warn(
                f"You have overridden `{name}` in both `{type(module).__name__}` (Module) and "
                f"`{type(datamodule).__name__}` (DataModule). It will use the implementation from the DataModule.",
                stacklevel=4,
            )
        return getattr(datamodule, name)
    if on_module and datamodule is not None and isinstance(datamodule, DataModule):
        warnings.warn(
            f"You have overridden `{name}` in the Module `{type(module).__name__}` but have passed in a "
            "DataModule. It will use the implementation from the Module.",
            stacklevel=4,
        )
    return getattr(module, name) if on_module else None


def batch_transfer(module: Any, device: Any, precision: Any, dataloader_idx: Any) -> Any:
    """A GET_BATCH_COMPLETED handler moving the batch to ``device`` through the transfer hooks of the
    module or the run's datamodule (its override wins), or None when nothing is to be done (CPU, no
    hooks, no dtype change)."""
    from ember.module import Module, attached_trainer

    datamodule = getattr(attached_trainer(module), "datamodule", None)
    before, move, after = (_transfer_hook(h, module, datamodule) for h in TRANSFER_HOOKS)
    if device.type == "cpu" and before is move is after is None and precision.param_dtype is None:
        return None
    move = move or Module.transfer_batch_to_device.__get__(module)
    convert = precision.convert_input

    def transfer(engine: Any) -> None:
        idx = dataloader_idx()
        batch = engine.state.batch
        if before is not None:
            batch = before(batch, idx)
        batch = convert(move(batch, device, idx))
        if after is not None:
            batch = after(batch, idx)
        engine.state.batch = batch

    return transfer
