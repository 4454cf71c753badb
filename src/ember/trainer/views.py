"""The Trainer's public read-only views, by Lightning's names: where the run stands, the engines,
the metric views, processes, data, callbacks and ``state`` (what is running and how it ended).

``Trainer`` inherits them; they only read what the Trainer and its fit progress own.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import torch

from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.progress import ProgressBar
from ember.engine import Engine
from ember.trainer.data import Batches, Limited


class TrainerFn(str, Enum):  # noqa: UP042 (str() as Lightning's: "TrainerFn.X", and == "x")
    """What the user called (Lightning's ``trainer.state.fn``)."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(str, Enum):  # noqa: UP042 (str() as Lightning's: "RunningStage.X", and == "x")
    """Which loop runs now (Lightning's ``trainer.state.stage``)."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class TrainerStatus(str, Enum):  # noqa: UP042 (str() as Lightning's: "TrainerStatus.X", and == "x")
    """How the last call went (Lightning's ``trainer.state.status``)."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class TrainerState:
    """``fn``, ``stage`` and ``status`` of a Trainer, as Lightning's ``trainer.state``."""

    def __init__(self) -> None:
        self.fn: TrainerFn | None = None
        self.stage: RunningStage | None = None
        self.status = TrainerStatus.INITIALIZING

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        return self.status == TrainerStatus.INTERRUPTED

    def __repr__(self) -> str:
        return f"TrainerState(fn={self.fn}, stage={self.stage}, status={self.status})"


class TrainerViews:
    """Read-only properties of :class:`ember.trainer.Trainer` (see there for the attributes they read)."""

    @property
    def engine(self) -> Engine:
        """The training engine; attach Ignite-style handlers to it."""
        return self.train_engine

    @property
    def validate_engine(self) -> Engine:
        return self._eval["validate"].engine

    @property
    def test_engine(self) -> Engine:
        return self._eval["test"].engine

    @property
    def predict_engine(self) -> Engine:
        return self._eval["predict"].engine

    @property
    def current_epoch(self) -> int:
        """Epochs completed so far; during an epoch, its 0-based index."""
        return self.fit_progress.current_epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far."""
        return self.fit_progress.global_step

    @property
    def should_stop(self) -> bool:
        """Set to True (e.g. from a callback) to end ``fit`` once ``min_epochs``/``min_steps`` are reached."""
        return self.fit_progress.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.fit_progress.request_stop(value)

    @property
    def sanity_checking(self) -> bool:
        """Whether the sanity check runs (``on_sanity_check_start`` to ``on_sanity_check_end``, its
        validation included): ``state.stage`` is then ``RunningStage.SANITY_CHECKING``, as Lightning."""
        return self.state.stage == RunningStage.SANITY_CHECKING

    @sanity_checking.setter
    def sanity_checking(self, value: bool) -> None:
        if value and self.state.stage != RunningStage.SANITY_CHECKING:
            self._stage_before_sanity_check = self.state.stage
            self.state.stage = RunningStage.SANITY_CHECKING
        elif not value and self.state.stage == RunningStage.SANITY_CHECKING:
            self.state.stage = getattr(self, "_stage_before_sanity_check", None)

    @property
    def fitting(self) -> bool:
        """Whether ``fit`` is running (validation inside fit included)."""
        return self._fitting

    @property
    def val_check_batch(self) -> int | None:
        """Validation runs after every this many training batches within an epoch; None: only at epoch ends."""
        return self._val_check_batch

    @property
    def eval_total_batches(self) -> int | None:
        """Batches of the evaluation pass that is running (or ran last), all its loaders together."""
        return self._eval_total_batches

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        return self._logging.callback_metrics()

    @property
    def logged_metrics(self) -> dict[str, Any]:
        return dict(self._logging.logged)

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        return self._logging.progress_bar_metrics()

    @property
    def loggers(self) -> list[Any]:
        return self._logging.loggers

    @property
    def logger(self) -> Any:
        return self._logging.loggers[0] if self._logging.loggers else None

    @property
    def log_dir(self) -> str:
        lg = self.logger
        return lg.log_dir if lg is not None and lg.log_dir is not None else self.default_root_dir

    @property
    def lightning_module(self) -> Any:
        return self.model

    @property
    def root_device(self) -> torch.device:
        """The device this process runs on."""
        return self.strategy.root_device

    @property
    def num_nodes(self) -> int:
        """Machines taking part (Lightning's name)."""
        return max(1, self.world_size // self.num_devices)

    @property
    def num_devices(self) -> int:
        """Processes (devices) per machine (Lightning's name)."""
        cluster = getattr(self.strategy, "cluster", None)
        return cluster.local_world_size if cluster is not None else 1

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def num_val_batches(self) -> list[int | None]:
        return list(self._val_counts)

    @property
    def num_test_batches(self) -> list[int | None]:
        return list(self._eval["test"].counts)

    @property
    def num_predict_batches(self) -> list[int | None]:
        return list(self._eval["predict"].counts)

    @property
    def train_dataloader(self) -> Any:
        """The training loader of the running (or last) fit, as Lightning: the loader (with the
        distributed sampler if one was put in), or a CombinedLoader's loaders (its ``iterables``)."""
        data = self._fit_loop.data
        if data is None:
            return None
        loader = data.loader
        if isinstance(loader, Batches):
            return loader.combined.iterables
        return loader.loader if isinstance(loader, Limited) else loader

    @property
    def val_dataloaders(self) -> Any:
        """The validation loader (or list of loaders) of the running (or last) fit or validate."""
        return _one_or_list(self._val_loaders or self._eval["validate"].loaders)

    @property
    def test_dataloaders(self) -> Any:
        return _one_or_list(self._eval["test"].loaders)

    @property
    def predict_dataloaders(self) -> Any:
        return _one_or_list(self._eval["predict"].loaders)

    @property
    def limit_train_batches(self) -> int | float:
        return self.limits["train"]

    @property
    def limit_val_batches(self) -> int | float:
        return self.limits["validate"]

    @property
    def limit_test_batches(self) -> int | float:
        return self.limits["test"]

    @property
    def limit_predict_batches(self) -> int | float:
        return self.limits["predict"]

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the fit will take (Lightning's name): from max_steps, or from max_epochs,
        the batches per epoch and gradient accumulation; ``inf`` when the data has no length."""
        if self.max_steps is not None:
            return self.max_steps
        batches = self.num_training_batches
        if batches is None or self.max_epochs is None:
            return math.inf
        return math.ceil(batches / self.accumulate_grad_batches) * self.max_epochs

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [c for c in self._active_callbacks() if isinstance(c, ModelCheckpoint)]

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint file the running (or last) ``fit``/``validate``/``test``/``predict`` loaded
        (its ``ckpt_path``, ``"last"``/``"best"`` resolved), or None (Lightning's ``trainer.ckpt_path``)."""
        return self._checkpoint.loaded_path

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        """The first ``ModelCheckpoint`` callback (Lightning's name), or None."""
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        found = [c for c in self._active_callbacks() if isinstance(c, EarlyStopping)]
        return found[0] if found else None

    @property
    def early_stopping_callbacks(self) -> list[EarlyStopping]:
        return [c for c in self._active_callbacks() if isinstance(c, EarlyStopping)]

    @property
    def progress_bar_callback(self) -> ProgressBar | None:
        found = [c for c in self._active_callbacks() if isinstance(c, ProgressBar)]
        return found[0] if found else None

    def _active_callbacks(self) -> list[Any]:
        return self._stage_dispatch.callbacks if self._stage_dispatch is not None else self.callbacks


def _one_or_list(loaders: list[Any]) -> Any:
    if not loaders:
        return None
    return loaders[0] if len(loaders) == 1 else list(loaders)
