"""Ignite's ``auto_*`` helpers: the same training script in one process or in many.

``auto_dataloader`` splits a dataset's samples over the processes (batch size and workers per
process), ``auto_model`` moves a model to :func:`~ember.distributed.device` and wraps it in
``DistributedDataParallel`` when there are several processes, ``auto_optim`` returns the optimizer
(native process groups need no wrapper). ``DistributedProxySampler`` deals the order of any sized
sampler out to the processes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from ember.distributed import comms

__all__ = ["DistributedProxySampler", "auto_dataloader", "auto_model", "auto_optim"]

logger = logging.getLogger(__name__)


class DistributedProxySampler(DistributedSampler):
    """Process ``rank``'s share of what ``sampler`` yields: its order is repeated up to an equal
    share for every process, and process ``r`` takes positions ``r, r + R, ...``. Each epoch's order
    is drawn after ``torch.manual_seed(epoch)`` (``set_epoch``), so every process draws the same."""

    def __init__(self, sampler: Sampler, num_replicas: int | None = None, rank: int | None = None) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be a torch Sampler, got {type(sampler).__name__}")
        if isinstance(sampler, DistributedSampler):
            raise TypeError("sampler is already a DistributedSampler: it splits the data by itself")
        if not hasattr(sampler, "__len__"):
            raise TypeError(f"sampler must have a length, {type(sampler).__name__} has none")
        super().__init__(sampler, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.sampler = sampler

    def __iter__(self) -> Iterator:
        torch.manual_seed(self.epoch)
        order: list = []
        while len(order) < self.total_size:
            order += list(self.sampler)
        share = order[: self.total_size][self.rank : self.total_size : self.num_replicas]
        if len(share) != self.num_samples:
            raise RuntimeError(f"process {self.rank} got {len(share)} samples instead of {self.num_samples}")
        return iter(share)


def auto_dataloader(dataset: Dataset, **kwargs: Any) -> DataLoader:
    """A ``DataLoader(dataset, **kwargs)`` for this process: with several processes, ``batch_size``
    and ``num_workers`` are divided among the processes, and a map-style dataset is split with a
    ``DistributedSampler`` (``shuffle`` goes to it) or, when a ``sampler`` is given, a
    :class:`DistributedProxySampler` around it. ``pin_memory`` defaults to True on CUDA."""
    world = comms.get_world_size()
    if world > 1:
        rank = comms.get_rank()
        if kwargs.get("batch_size", 0) >= world:
            kwargs["batch_size"] //= world
        nproc = comms.get_nproc_per_node()
        if kwargs.get("num_workers", 0) >= nproc:
            kwargs["num_workers"] = (kwargs["num_workers"] + nproc - 1) // nproc
        if "batch_sampler" in kwargs:
            warnings.warn("a batch_sampler was given: make sure it splits the data over the processes", stacklevel=2)
        elif isinstance(dataset, IterableDataset):
            logger.info("an iterable dataset is not split: each process must produce its own share")
        else:
            sampler = kwargs.get("sampler")
            if isinstance(sampler, DistributedSampler):
                if sampler.rank != rank or sampler.num_replicas != world:
                    warnings.warn(
                        f"the DistributedSampler has rank={sampler.rank}, num_replicas={sampler.num_replicas}; "
                        f"this process is rank {rank} of {world}",
                        stacklevel=2,
                    )
            elif sampler is None:
                sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=kwargs.pop("shuffle", True))
            else:
                sampler = DistributedProxySampler(sampler, num_replicas=world, rank=rank)
            kwargs["sampler"] = sampler
    kwargs.setdefault("pin_memory", comms.device().type == "cuda")
    return DataLoader(dataset, **kwargs)


def auto_model(model: nn.Module, sync_bn: bool = False, **kwargs: Any) -> nn.Module:
    """``model`` on :func:`~ember.distributed.device`; with several processes, in
    ``DistributedDataParallel`` (``kwargs`` go to it; batch norms made synchronous with ``sync_bn``);
    in one process with several GPUs, in ``DataParallel``."""
    target = comms.device()
    if any(p.device != target for p in model.parameters()):
        model.to(target)
    if comms.get_world_size() > 1:
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if torch.cuda.is_available():
            if "device_ids" in kwargs:
                raise ValueError(f"auto_model() sets device_ids itself (to the local rank); got kwargs={kwargs}")
            kwargs["device_ids"] = [comms.get_local_rank()]
        return nn.parallel.DistributedDataParallel(model, **kwargs)
    if torch.cuda.device_count() > 1 and target.type == "cuda":
        return nn.DataParallel(model, **kwargs)
    return model


def auto_optim(optimizer: Optimizer, **kwargs: Any) -> Optimizer:
    """``optimizer`` itself: native process groups average gradients in DDP, not in the optimizer."""
    return optimizer
