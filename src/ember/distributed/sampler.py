"""Splitting a DataLoader's samples over the processes of a run without changing how it samples.

Lightning replaces a training loader's sampler with a ``DistributedSampler`` that shuffles, so a
two-process run does not see the data a one-process run sees. Ember keeps the loader's own sampler
(sequential, random with its generator, weighted, any custom one) and deals its order out:
process ``r`` of ``R`` takes positions ``r, r + R, r + 2R, ...``. With a per-process batch of
``B / R``, the ``R`` batches of step ``i`` together are exactly the one-process batch ``i`` of size
``B``, so DDP reproduces the one-process run (to float tolerance) when the data divides evenly.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, Sampler


class ShardedSampler(DistributedSampler):
    """Process ``rank``'s share of the order that ``sampler`` gives (the same on every process).

    Args:
        sampler: the loader's own sampler; it must give every process the same order (a random one
            needs a seeded ``generator``: :func:`distribute_loader` gives it one when it has none).
        num_replicas: how many processes share the data.
        rank: this process's index.
        drop_last: drop the tail that does not divide evenly over the processes (training loaders
            that drop their last incomplete batch); otherwise, with ``pad``, repeat samples from the
            start so every process gets as many (DDP steps in lockstep).
        pad: pad to equal shares (training); without it, shares may differ by one sample
            (evaluation: exact metrics, no sample counted twice).
    """

    def __init__(
        self, sampler: Sampler, num_replicas: int, rank: int, drop_last: bool = False, pad: bool = True
    ) -> None:
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas={num_replicas!r} must be a positive integer")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank!r} must be in [0, {num_replicas})")
        # DistributedSampler's attributes, for code that reads them (no super().__init__: it wants a
        # dataset and would ask the process group for what is given here)
        self.sampler = sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.pad = pad
        self.shuffle = not isinstance(sampler, torch.utils.data.SequentialSampler)
        self.seed = 0
        self.epoch = 0
        self.dataset = getattr(sampler, "data_source", None)
        self.num_samples = self._share(len(sampler))  # type: ignore[arg-type]
        self.total_size = self.num_samples * num_replicas

    @property
    def generator(self) -> torch.Generator | None:
        """The generator that orders the samples (what a checkpoint records to resume mid-epoch)."""
        return getattr(self.sampler, "generator", None)

    def _share(self, n: int) -> int:
        r = self.num_replicas
        if self.drop_last:
            return n // r
        if self.pad or n < r:
            return math.ceil(n / r)
        return len(range(self.rank, n, r))

    def __iter__(self) -> Iterator[int]:
        # exactly len(sampler) indices, as one process's loop would take: running the sampler's
        # iterator to its end could draw from its generator once more (RandomSampler does)
        indices = list(itertools.islice(iter(self.sampler), len(self.sampler)))  # type: ignore[arg-type]
        n, r = len(indices), self.num_replicas
        if self.drop_last:
            indices = indices[: n - n % r]
        elif (self.pad or n < r) and n % r and n:
            total = math.ceil(n / r) * r
            indices += (indices * math.ceil(total / n))[: total - n]
        return iter(indices[self.rank :: r])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)


def _uneven_batches(n: int, replicas: int, batch_size: int | None, drop_last: bool) -> bool:
    """Whether unpadded shares of ``n`` samples would give the processes different batch counts."""
    size = batch_size or 1
    shares = {n // replicas, math.ceil(n / replicas)}
    return len({s // size if drop_last else math.ceil(s / size) for s in shares}) > 1


def distribute_loader(
    loader: Any, num_replicas: int, rank: int, training: bool, pad_eval: bool = False, seed: int | None = None
) -> Any:
    """``loader`` with its sampler dealt out over ``num_replicas`` processes (see the module
    docstring), or ``loader`` itself when there is nothing to do: one process, not a DataLoader, an
    ``IterableDataset`` (it must shard itself), a ``DistributedSampler`` already, or a custom batch
    sampler. A random sampler without a generator gets one seeded with ``seed`` (the same on every
    process) so the processes agree on the order.

    Training loaders pad to equal shares unless the loader drops its last incomplete batch (then
    the uneven tail is dropped too); evaluation loaders are split without padding (no sample
    counted twice), unless ``pad_eval`` (a strategy whose every step is collective, like FSDP) and
    the unpadded shares would give the processes different numbers of batches.
    """
    if num_replicas == 1 or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        warnings.warn(
            "an IterableDataset is not split over the processes by Ember: every process iterates all of it unless the "
            "dataset shards itself (e.g. by ember.distributed.get_rank())",
            stacklevel=3,
        )
        return loader
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        return loader  # the user split it already
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        warnings.warn(
            f"the loader has a custom batch_sampler ({type(batch_sampler).__name__}), which Ember does not split over "
            "the processes; split it yourself, or pass use_distributed_sampler=False to silence this",
            stacklevel=3,
        )
        return loader
    if getattr(sampler, "generator", False) is None:  # random order from the global RNG: make it agree
        sampler = copy.copy(sampler)
        sampler.generator = torch.Generator().manual_seed(0 if seed is None else seed)
    drop_last = bool(loader.drop_last) if training else False
    pad = training or (pad_eval and _uneven_batches(len(sampler), num_replicas, loader.batch_size, loader.drop_last))
    shard = ShardedSampler(sampler, num_replicas, rank, drop_last=drop_last, pad=pad)
    if type(loader) is DataLoader and (batch_sampler is None or loader.batch_size is not None):
        return _rebuilt(loader, shard)  # a new loader with the same settings (no iterator of the original shared)
    # a DataLoader subclass may hold state of its own (and a loader given a BatchSampler of its own has no
    # batch_size to rebuild from): copy it. DataLoader forbids setting these after
    # construction only to keep them consistent with each other; they are replaced together here, as a
    # new DataLoader(...) with this sampler would set them.
    new = copy.copy(loader)
    object.__setattr__(new, "sampler", shard)
    if batch_sampler is not None:
        object.__setattr__(new, "batch_sampler", BatchSampler(shard, loader.batch_size, loader.drop_last))
    return new


def _rebuilt(loader: DataLoader, sampler: Sampler) -> DataLoader:
    """``DataLoader(...)`` with ``loader``'s public settings and ``sampler`` (batched as ``loader`` was)."""
    kwargs: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):  # torch >= 2.6
        kwargs["in_order"] = loader.in_order
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last, **kwargs)
