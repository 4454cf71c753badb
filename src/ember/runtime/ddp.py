"""``DDPStrategy``: every process holds the whole model and ``DistributedDataParallel`` averages the
gradients during backward.

DDP does its per-step bookkeeping (finding unused parameters, broadcasting buffers, preparing the
gradient reduction) in its ``forward``; the Trainer calls ``training_step``, not ``forward``, so
DDP wraps a thin module whose forward *is* the module's ``training_step`` (as Lightning does).
Validation, test and predict call the module's own steps, outside DDP: they need no gradients and
so no collectives, which also lets the evaluation data be split without padding.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ember.runtime.parallel import DEFAULT_TIMEOUT, ParallelStrategy


class _TrainingStep(nn.Module):
    """What DDP wraps: ``forward(*args)`` is ``module.training_step(*args)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.training_step(*args, **kwargs)


class DDPStrategy(ParallelStrategy):
    """Data-parallel training with ``torch.nn.parallel.DistributedDataParallel``.

    Args:
        find_unused_parameters: let DDP find parameters that a step did not use (slower; needed
            when some parameters get no gradient in a step).
        timeout: how long a collective waits for the other processes (``timedelta`` or seconds).
        process_group_backend: default ``nccl`` on CUDA, ``gloo`` on CPU.
        start_method: ``"popen"`` (``strategy="ddp"``: re-run the script for the other ranks) or
            ``"spawn"``/``"fork"``/``"forkserver"`` (``strategy="ddp_spawn"``).
        **ddp_kwargs: passed to ``DistributedDataParallel`` (``static_graph``,
            ``gradient_as_bucket_view``, ``bucket_cap_mb``, ``broadcast_buffers``, ...).

    Example::

        Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True, timeout=120))
    """

    def __init__(
        self,
        find_unused_parameters: bool = False,
        timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
        process_group_backend: str | None = None,
        start_method: str = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, process_group_backend=process_group_backend, start_method=start_method)
        if not isinstance(find_unused_parameters, bool):
            raise TypeError(f"find_unused_parameters must be True or False, got {find_unused_parameters!r}")
        for key in ("device_ids", "output_device", "module", "process_group"):
            if key in ddp_kwargs:
                raise ValueError(f"DDPStrategy({key}=...) is set by the strategy itself; leave it out")
        self.find_unused_parameters = find_unused_parameters
        self.ddp_kwargs = ddp_kwargs
        self._ddp: Any = None  # the DistributedDataParallel wrapper of the module being trained

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to this process's device and, with ``sync_batchnorm``, replace its batch norms
        by ``SyncBatchNorm``. It is not wrapped here: :meth:`training_step_fn` wraps its training step."""
        module.to(self.root_device)
        if self.sync_batchnorm:
            module = convert_sync_batchnorm(module)
        return module

    def training_step_fn(self, module: Any) -> Callable:
        """DDP around ``module.training_step`` (built once per module: a second ``fit`` reuses it)."""
        if self._ddp is None or self._ddp.module.module is not module:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = DistributedDataParallel(
                _TrainingStep(module), find_unused_parameters=self.find_unused_parameters, **self.ddp_kwargs
            )
        return self._ddp

    def no_sync(self) -> Callable[[], Any] | None:
        return self._ddp.no_sync if self._ddp is not None else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ddp"] = None  # ddp_spawn pickles the Trainer; a DDP wrapper belongs to one process
        return state


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm*d`` replaced by ``SyncBatchNorm`` (in place for
    submodules; a module that is itself a batch norm comes back as a new one).

    SyncBatchNorm synchronises batch statistics over the processes in training; torch supports it
    on CUDA only, so a CPU run can convert but not train such layers.
    """
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
