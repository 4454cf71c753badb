"""The run context: everything a module or a callback may use from the trainer running it.

``ember.Module`` (``self.trainer``, ``self.log``, ``self.optimizers()``, ``self.manual_backward``)
and callbacks (their ``trainer`` argument) reach the trainer through these public names only, so the
module layer does not depend on the trainer package and the trainer's inside can change freely.
``ember.Trainer`` implements it; a test double implements it with a handful of attributes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class RunContext(Protocol):
    """What modules and callbacks may read and call on the trainer running them."""

    # where the run stands
    @property
    def current_epoch(self) -> int: ...
    @property
    def global_step(self) -> int: ...

    should_stop: bool
    sanity_checking: bool

    @property
    def fitting(self) -> bool: ...

    # processes
    @property
    def is_global_zero(self) -> bool: ...
    @property
    def world_size(self) -> int: ...
    @property
    def global_rank(self) -> int: ...
    @property
    def local_rank(self) -> int: ...

    strategy: Any

    # data
    num_training_batches: int | None

    @property
    def num_val_batches(self) -> list[int | None]: ...
    val_check_interval: int | float
    check_val_every_n_epoch: int | None
    @property
    def val_check_batch(self) -> int | None: ...
    @property
    def eval_total_batches(self) -> int | None: ...

    # optimization
    optimizers: list[Any]
    lr_scheduler_configs: list[Any]
    step_optimizers: list[Any]

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None: ...

    # logging
    log_every_n_steps: int
    default_root_dir: str

    def log_value(
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
    ) -> None: ...
    @property
    def callback_metrics(self) -> Mapping[str, torch.Tensor]: ...
    @property
    def logged_metrics(self) -> Mapping[str, Any]: ...
    @property
    def progress_bar_metrics(self) -> Mapping[str, float]: ...
    @property
    def loggers(self) -> list[Any]: ...
    @property
    def log_dir(self) -> str: ...

    # the engines (Ignite-style handlers may attach to them)
    train_engine: Any
    fast_dev_run: int

    # checkpoints
    def dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]: ...
    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False) -> None: ...
