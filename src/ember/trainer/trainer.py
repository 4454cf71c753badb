"""``ember.Trainer``: Lightning's ``fit/validate/test/predict``, built on :class:`ember.engine.Engine`.

Every loop is an Engine run (``trainer.train_engine``, ``validate_engine``, ``test_engine``,
``predict_engine``; ``trainer.engine`` is the train engine), and every Module/Callback hook is
dispatched from a handler on one of their events. Where each hook fires::

    fit(module, train_dataloaders, val_dataloaders, datamodule, ckpt_path)
      [distributed: the strategy starts the other processes (once) or joins torchrun's/SLURM's
       process group; loaders get their samples split over the ranks, keeping their own order]
      datamodule.prepare_data() (local rank 0; the others wait), setup("fit") on datamodule, callbacks and module
      configure_callbacks, move to device, [ckpt_path: load weights, on_load_checkpoint]
      configure_optimizers, [ckpt_path: optimizer/scheduler/scaler/callback/loop states]
      SIGTERM / SIGUSR1 / first Ctrl-C: finish the step, save last.ckpt, raise Preempted
      train_engine.run(train data)
        STARTED              on_fit_start; sanity check (on_sanity_check_start, a short validation
                             that logs nothing, on_sanity_check_end); on_train_start
        EPOCH_STARTED        on_train_epoch_start; then this epoch's data iterator is made (on resume:
                             rebuilt from the epoch's recorded RNG states and advanced past the
                             batches already consumed, see ember.trainer.checkpointing)
        GET_BATCH_COMPLETED  on_before_batch_transfer, transfer_batch_to_device, on_after_batch_transfer
                             (only when the device is not the CPU or a hook is overridden)
        ITERATION_STARTED    on_train_batch_start (returning -1 ends the epoch)
        process function     training_step (under autocast for mixed precision)
                             on_before_backward, backward, on_after_backward
                             every accumulate_grad_batches-th batch (and at the epoch's end):
                               on_before_optimizer_step, gradient clipping, optimizer_step,
                               on_before_zero_grad, optimizer_zero_grad, step-interval schedulers
        ITERATION_COMPLETED  on_train_batch_end; step values to loggers every log_every_n_steps;
                             validation when val_check_interval says so; max_steps / max_time /
                             should_stop checks: stopping ends the epoch (EPOCH_COMPLETED still runs
                             and the epoch counts as completed, as in Lightning; an epoch cut short
                             by max_steps skips its validation), then the run
        EPOCH_COMPLETED      validation (every check_val_every_n_epoch); on_train_epoch_end (where
                             ModelCheckpoint saves and EarlyStopping checks: they have the lowest
                             priority, so they run after everything that logs); epoch values to
                             loggers; epoch-interval schedulers; should_stop check
        COMPLETED            on_train_end, on_fit_end
        EXCEPTION_RAISED     on_exception, then the exception is re-raised
      teardown("fit")

    validation (inside fit, or validate()) on validate_engine, under inference_mode, model.eval():
        STARTED on_validation_start · EPOCH_STARTED on_validation_epoch_start ·
        ITERATION_STARTED on_validation_batch_start · validation_step ·
        ITERATION_COMPLETED on_validation_batch_end · EPOCH_COMPLETED on_validation_epoch_end,
        epoch values to loggers · COMPLETED on_validation_end
    test() and predict(): the same with test_* / predict_* names.

Within one hook, on ``*_start`` hooks the callbacks run before the module and on ``*_end`` hooks
the module runs first; callbacks run by ``priority`` (higher first), then in list order.
"""

from __future__ import annotations

import datetime
import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.progress import ProgressBar
from ember.engine import Engine
from ember.loggers.base import Logger
from ember.loggers.csv_logger import CSVLogger
from ember.module import Module
from ember.runtime.precision import Precision, resolve_precision
from ember.runtime.strategy import Strategy, resolve_strategy
from ember.trainer import data as data_utils
from ember.trainer.checkpointing import CheckpointConnector
from ember.trainer.eval_loop import EvalLoop
from ember.trainer.fit_loop import FitLoop, StepOptimizer
from ember.trainer.hooks import Dispatch, overrides
from ember.trainer.logging import TrainerLogging
from ember.trainer.optimization import LRSchedulerConfig, parse_optimizers
from ember.trainer.preemption import Preempted, SignalWatch


def _int_arg(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name}={value!r} is not valid; it must be {allowed}")
    return value


def _parse_max_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, dict):
        try:
            seconds = datetime.timedelta(**value).total_seconds()
        except TypeError as err:
            raise ValueError(f"max_time={value!r}: {err}") from None
    elif isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"max_time={value!r}: use 'DD:HH:MM:SS', a dict of timedelta arguments, or a timedelta")
        d, h, m, s = map(int, parts)
        seconds = datetime.timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    else:
        raise TypeError(f"max_time={value!r}: use 'DD:HH:MM:SS', a dict of timedelta arguments, or a timedelta")
    if seconds <= 0:
        raise ValueError(f"max_time={value!r} must be a positive duration")
    return seconds


class Trainer:
    """Runs an ``ember.Module`` (or any ``nn.Module`` with the same methods) — see the module
    docstring for where each hook fires.

    Example::

        trainer = ember.Trainer(max_epochs=5, precision="bf16-mixed")
        trainer.fit(model, train_loader, val_loader)
        trainer.test(model, test_loader)

    Distributed: ``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` in a plain ``python
    train.py`` starts the second process itself (``"ddp_spawn"``: with torch.multiprocessing,
    ``"fsdp"``: sharded); under ``torchrun``/SLURM the Trainer joins the launcher's processes.
    Loggers, checkpoints and the progress bar act on rank zero; ``self.log(..., sync_dist=True)``
    values are reduced over the processes when they are written.
    """

    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str | Strategy = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        sync_batchnorm: bool = False,
        use_distributed_sampler: bool = True,
        precision: str | int = "32-true",
        logger: bool | Logger | list[Logger] = True,
        callbacks: Callback | list[Callback] | None = None,
        fast_dev_run: bool | int = False,
        max_epochs: int | None = 1000,
        min_epochs: int | None = None,
        max_steps: int | None = None,
        min_steps: int | None = None,
        max_time: str | dict | datetime.timedelta | None = None,
        limit_train_batches: int | float = 1.0,
        limit_val_batches: int | float = 1.0,
        limit_test_batches: int | float = 1.0,
        limit_predict_batches: int | float = 1.0,
        val_check_interval: int | float = 1.0,
        check_val_every_n_epoch: int = 1,
        num_sanity_val_steps: int = 2,
        log_every_n_steps: int = 50,
        enable_checkpointing: bool = True,
        enable_progress_bar: bool = True,
        enable_model_summary: bool = True,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        deterministic: bool = False,
        inference_mode: bool = True,
        default_root_dir: str | os.PathLike = ".",
        detect_anomaly: bool = False,
    ) -> None:
        self.precision = resolve_precision(precision)
        # devices/num_nodes/sync_batchnorm go to the strategy; "auto" is DDP for more than one process
        self.strategy = resolve_strategy(strategy, accelerator, devices, num_nodes, sync_batchnorm)
        if not isinstance(use_distributed_sampler, bool):
            raise TypeError(f"use_distributed_sampler must be True or False, got {use_distributed_sampler!r}")
        self.use_distributed_sampler = use_distributed_sampler
        if max_steps == -1:  # Lightning's spelling of "no limit"
            max_steps = None
        self.max_epochs = _int_arg("max_epochs", max_epochs, 1, allow_none=True)
        self.min_epochs = _int_arg("min_epochs", min_epochs, 0, allow_none=True)
        self.max_steps = _int_arg("max_steps", max_steps, 1, allow_none=True)
        self.min_steps = _int_arg("min_steps", min_steps, 0, allow_none=True)
        self.max_time = _parse_max_time(max_time)
        if self.max_epochs is None and self.max_steps is None and self.max_time is None:
            raise ValueError("max_epochs=None needs max_steps or max_time, or training would never end")
        self.limits = {
            stage: data_utils.check_limit(f"limit_{name}_batches", value)
            for stage, name, value in (
                ("train", "train", limit_train_batches),
                ("validate", "val", limit_val_batches),
                ("test", "test", limit_test_batches),
                ("predict", "predict", limit_predict_batches),
            )
        }
        if isinstance(val_check_interval, bool) or not isinstance(val_check_interval, (int, float)):
            raise TypeError(f"val_check_interval={val_check_interval!r}: use a float fraction of an epoch or an int batch count")
        if isinstance(val_check_interval, float) and not 0.0 < val_check_interval <= 1.0:
            raise ValueError(f"val_check_interval={val_check_interval!r}: a fraction must be in (0.0, 1.0]")
        if isinstance(val_check_interval, int) and val_check_interval < 1:
            raise ValueError(f"val_check_interval={val_check_interval!r}: a batch count must be >= 1")
        self.val_check_interval = val_check_interval
        self.check_val_every_n_epoch = _int_arg("check_val_every_n_epoch", check_val_every_n_epoch, 1)
        self.num_sanity_val_steps = _int_arg("num_sanity_val_steps", num_sanity_val_steps, -1)
        self.log_every_n_steps = _int_arg("log_every_n_steps", log_every_n_steps, 1)
        self.accumulate_grad_batches = _int_arg("accumulate_grad_batches", accumulate_grad_batches, 1)
        if gradient_clip_val is not None and (
            isinstance(gradient_clip_val, bool) or not isinstance(gradient_clip_val, (int, float)) or gradient_clip_val < 0
        ):
            raise ValueError(f"gradient_clip_val={gradient_clip_val!r} must be a non-negative number or None")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}; choose 'norm' or 'value'")
        self.gradient_clip_val = gradient_clip_val or None
        self.gradient_clip_algorithm = gradient_clip_algorithm
        if not isinstance(default_root_dir, (str, os.PathLike)):
            raise TypeError(f"default_root_dir must be a path, got {default_root_dir!r}")
        self.default_root_dir = os.fspath(default_root_dir)
        for name, flag in (
            ("enable_checkpointing", enable_checkpointing),
            ("enable_progress_bar", enable_progress_bar),
            ("enable_model_summary", enable_model_summary),
            ("deterministic", deterministic),
            ("inference_mode", inference_mode),
            ("detect_anomaly", detect_anomaly),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.inference_mode = inference_mode
        self.detect_anomaly = detect_anomaly
        self.deterministic = deterministic
        if deterministic:
            torch.use_deterministic_algorithms(True)
        if isinstance(fast_dev_run, bool):
            fast = 1 if fast_dev_run else 0
        else:
            fast = _int_arg("fast_dev_run", fast_dev_run, 0) or 0
        self.fast_dev_run = fast
        if fast:
            self.max_epochs, self.max_steps, self.max_time = 1, fast, None
            self.limits = dict.fromkeys(self.limits, fast)
            self.val_check_interval, self.num_sanity_val_steps, self.log_every_n_steps = 1.0, 0, 1
            logger = False
            enable_checkpointing = False

        self.callbacks = self._init_callbacks(callbacks, enable_progress_bar, enable_model_summary)
        if enable_checkpointing and not any(isinstance(c, ModelCheckpoint) for c in self.callbacks):
            self.callbacks.append(ModelCheckpoint())
        elif not enable_checkpointing and any(isinstance(c, ModelCheckpoint) for c in self.callbacks):
            raise ValueError("enable_checkpointing=False but a ModelCheckpoint is among the callbacks; remove one of them")
        self._logging = TrainerLogging()
        self._logging.loggers = self._init_loggers(logger)
        self._logging.sync = getattr(self.strategy, "sync_logged", None)  # sync_dist=True across processes
        self.precision_plugin = Precision(self.precision, self.root_device)
        self._fit_loop = FitLoop(self)
        self._checkpoint = CheckpointConnector(self)
        self._signals = SignalWatch()
        self.train_engine = Engine(EvalLoop._unattached)
        self._eval = {stage: EvalLoop(self, stage) for stage in ("validate", "test", "predict")}
        self.should_stop = False
        self.sanity_checking = False
        self.optimizers: list[Any] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self._manual_optimizers: list[StepOptimizer] = []
        self.model: Any = None
        self.datamodule: Any = None
        self._current_epoch = 0
        self._fitting = False
        self._val_loaders: list[Any] = []
        self._val_counts: list[int | None] = []
        self._val_check_batch: int | None = None
        self._eval_total_batches: int | None = None
        self._deadline_box: list[float] = [0.0]
        self._handled_exception: BaseException | None = None
        self._stage_dispatch: Dispatch | None = None
        self.num_training_batches: int | None = None

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _init_callbacks(callbacks: Any, progress: bool, summary: bool) -> list[Any]:
        if callbacks is None:
            callbacks = []
        elif not isinstance(callbacks, (list, tuple)):
            callbacks = [callbacks]
        callbacks = list(callbacks)
        for i, cb in enumerate(callbacks):
            if isinstance(cb, (type, str)) or cb is None:
                raise TypeError(f"callbacks[{i}]={cb!r} must be a callback instance (e.g. EarlyStopping(...)), not {type(cb).__name__}")
        if progress and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(ProgressBar())
        if summary and not any(isinstance(c, ModelSummary) for c in callbacks):
            callbacks.append(ModelSummary())
        return callbacks

    def _init_loggers(self, logger: Any) -> list[Any]:
        """``True``: TensorBoard under ``default_root_dir/ember_logs`` when tensorboard is installed,
        else CSV there; ``False``/``None``: none; a logger or a list of loggers as given."""
        if logger is True:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is not None:
                from ember.loggers.tensorboard_logger import TensorBoardLogger

                return [TensorBoardLogger(self.default_root_dir, name="ember_logs")]
            return [CSVLogger(self.default_root_dir, name="ember_logs")]
        if logger is False or logger is None:
            return []
        loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
        for i, lg in enumerate(loggers):
            if isinstance(lg, type) or not callable(getattr(lg, "log_metrics", None)):
                raise TypeError(
                    f"logger[{i}]={lg!r} is not a logger instance; pass True, False, a logger such as "
                    "TensorBoardLogger('runs') or a list of them"
                )
        return loggers

    # ------------------------------------------------------------------ public views

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
        return self._current_epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far."""
        return self._fit_loop.global_step

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

    # ------------------------------------------------------------------ entry points

    def fit(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: Any = None,
        ckpt_path: str | os.PathLike | None = None,
    ) -> None:
        """Train ``model``; validate during training when validation data is given.

        ``ckpt_path`` continues a run exactly where a checkpoint left it (mid-epoch too): a path,
        ``"last"`` (the newest ``*.ckpt`` under ``default_root_dir`` or in a ModelCheckpoint's
        ``dirpath``, which may be an fsspec URL; none found starts from scratch with a warning) or
        ``"best"``. A checkpoint saved as its run ended trains nothing more, except that a larger
        ``max_epochs``/``max_steps`` extends a run that reached its limit (one stopped by
        ``max_time`` continues with a new time budget; one that EarlyStopping ended stays ended).
        """
        self._check_model(model, "fit", ("training_step", "configure_optimizers"))
        self._run_stage(
            "fit", model, datamodule, ckpt_path, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders
        )

    def validate(
        self, model: Any = None, dataloaders: Any = None, datamodule: Any = None, verbose: bool = True, ckpt_path: Any = None
    ) -> list[dict[str, float]]:
        """One pass over the validation data; returns one dict of logged metrics per dataloader.
        ``ckpt_path`` (a path, ``"best"`` or ``"last"``) loads those weights first."""
        return self._run_eval("validate", model, dataloaders, datamodule, verbose, ckpt_path)

    def test(
        self, model: Any = None, dataloaders: Any = None, datamodule: Any = None, verbose: bool = True, ckpt_path: Any = None
    ) -> list[dict[str, float]]:
        """One pass over the test data; returns one dict of logged metrics per dataloader.
        ``ckpt_path`` (a path, ``"best"`` or ``"last"``) loads those weights first."""
        return self._run_eval("test", model, dataloaders, datamodule, verbose, ckpt_path)

    def predict(self, model: Any = None, dataloaders: Any = None, datamodule: Any = None, ckpt_path: Any = None) -> list[Any]:
        """Returns ``predict_step`` outputs: a list per batch, or a list of such lists for several loaders."""
        model = self._model_for(model, "predict")
        self._check_model(model, "predict", ())
        if not callable(getattr(model, "predict_step", None)):  # ember.Module has a default; a plain nn.Module may not
            raise TypeError(f"{type(model).__name__} cannot be used with trainer.predict(): it does not define predict_step()")
        loaders = self._run_stage("predict", model, datamodule, ckpt_path, dataloaders=dataloaders)
        preds = self._eval["predict"].predictions
        return preds[0] if len(loaders) == 1 else preds

    def _run_eval(
        self, stage: str, model: Any, dataloaders: Any, datamodule: Any, verbose: bool, ckpt_path: Any
    ) -> list[dict[str, float]]:
        model = self._model_for(model, stage)
        self._check_model(model, stage, ("validation_step",) if stage == "validate" else ("test_step",))
        loaders = self._run_stage(stage, model, datamodule, ckpt_path, dataloaders=dataloaders)
        results = self._eval[stage].results_per_dataloader(len(loaders))
        if verbose and self.is_global_zero and any(results):
            _print_results(stage, results)
        return results

    def _model_for(self, model: Any, stage: str) -> Any:
        if model is None:
            if self.model is None:
                raise ValueError(f"trainer.{stage}() needs a model: pass one, or call fit() first")
            return self.model
        return model

    @staticmethod
    def _check_model(model: Any, stage: str, required: Sequence[str]) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"trainer.{stage}() needs a torch.nn.Module (e.g. an ember.Module), got {type(model).__name__}")
        for name in required:
            if not callable(getattr(model, name, None)) or (isinstance(model, Module) and not overrides(model, name, Module)):
                raise TypeError(f"{type(model).__name__} cannot be used with trainer.{stage}(): it does not define {name}()")

    # ------------------------------------------------------------------ the run

    def _run_stage(self, stage: str, model: Any, datamodule: Any, ckpt_path: Any = None, **loaders: Any) -> list[Any]:
        """Run one stage in this process, or in every process when the strategy starts them: the
        script launcher starts the other ranks once and runs rank 0 here; ddp_spawn runs the stage
        in fresh processes and copies rank zero's results back."""
        launcher = self.strategy.launcher
        if launcher is not None:
            return launcher.launch(self._run_stage, stage, model, datamodule, ckpt_path, **loaders)
        try:
            self.strategy.setup_environment()  # joins the process group (a no-op on one device)
            return self._run_stage_here(stage, model, datamodule, ckpt_path, **loaders)
        except BaseException as err:
            self.strategy.on_exception(err)  # distributed: the error says which rank raised it
            raise

    def _run_stage_here(self, stage: str, model: Any, datamodule: Any, ckpt_path: Any = None, **loaders: Any) -> list[Any]:
        """Set up, run and tear down one stage ('fit', 'validate', 'test', 'predict')."""
        if datamodule is not None and any(v is not None for v in loaders.values()):
            raise ValueError(f"trainer.{stage}(): pass dataloaders or a datamodule, not both")
        if datamodule is not None and not callable(getattr(datamodule, "setup", None)):
            raise TypeError(f"datamodule must be an ember.DataModule (or provide setup()), got {type(datamodule).__name__}")
        self.model = model
        self.datamodule = datamodule
        _attach_trainer(model, self)
        self.should_stop = False
        self._handled_exception = None
        if datamodule is not None:
            datamodule.trainer = self
            if callable(getattr(datamodule, "prepare_data", None)):
                if self.local_rank == 0:  # as in Lightning: once per machine, while the other ranks wait
                    datamodule.prepare_data()
                self.strategy.barrier("prepare_data")
            datamodule.setup(stage)
        extra = model.configure_callbacks() if callable(getattr(model, "configure_callbacks", None)) else []
        callbacks = self._merge_callbacks(extra)
        dispatch = Dispatch(self, model, callbacks)
        self._stage_dispatch = dispatch
        dispatch.call("setup", stage)
        self.precision_plugin.convert_module(model)  # dtype before a distributed strategy wraps or shards it
        self.strategy.setup_module(model)
        path = self._checkpoint.resolve(ckpt_path, stage)
        checkpoint = self._checkpoint.load(path) if path is not None else None
        if checkpoint is not None:
            self._checkpoint.restore_model(checkpoint)
            if stage != "fit":
                self.strategy.restored()
        anomaly = torch.autograd.set_detect_anomaly(True) if self.detect_anomaly else None
        try:
            if stage == "fit":
                self._fit(model, dispatch, loaders["train_dataloaders"], loaders["val_dataloaders"], checkpoint)
                return []
            return self._evaluate(stage, model, dispatch, loaders["dataloaders"])
        finally:
            if anomaly is not None:
                torch.autograd.set_detect_anomaly(False)
            dispatch.call("teardown", stage)
            if datamodule is not None:
                datamodule.teardown(stage)

    def _merge_callbacks(self, extra: Any) -> list[Any]:
        extra = list(extra) if isinstance(extra, (list, tuple)) else ([extra] if extra else [])
        if not extra:
            return list(self.callbacks)
        types = {type(c) for c in extra}
        return [c for c in self.callbacks if type(c) not in types] + extra

    def _fit(self, model: Any, dispatch: Dispatch, train: Any, val: Any, checkpoint: dict[str, Any] | None) -> None:
        train = data_utils.find_loaders("train", train, self.datamodule, model)
        if train is None:
            raise ValueError("trainer.fit() needs training data: pass train_dataloaders, a datamodule, or define train_dataloader()")
        if isinstance(train, (list, tuple)):
            raise TypeError("train_dataloaders must be one iterable (a DataLoader); several training loaders are not supported")
        data_utils.as_loader_list(train, "train_dataloaders")
        train = self._distributed_loader(train, training=True)
        n_train = data_utils.num_batches(train, self.limits["train"], "limit_train_batches")
        if n_train == 0:
            warnings.warn("limit_train_batches gives 0 batches: nothing to train", stacklevel=3)
            return
        train_data = train
        if data_utils.sized_length(train) is None and n_train is not None:
            train_data = data_utils.Limited(train, n_train)
            n_train = None
        self.num_training_batches = n_train
        self._val_check_batch = data_utils.val_check_batch(self.val_check_interval, n_train)
        val_loaders = data_utils.as_loader_list(data_utils.find_loaders("validate", val, self.datamodule, model), "val_dataloaders")
        val_loaders = [self._distributed_loader(v, training=False) for v in val_loaders]
        self._val_loaders = val_loaders
        self._val_counts = [data_utils.num_batches(v, self.limits["validate"], "limit_val_batches") for v in val_loaders]
        if val_loaders and (
            not callable(getattr(model, "validation_step", None))
            or (isinstance(model, Module) and not overrides(model, "validation_step", Module))
        ):
            raise TypeError(f"validation data was given but {type(model).__name__} does not define validation_step()")

        self.optimizers, self.lr_scheduler_configs = parse_optimizers(model.configure_optimizers())
        if not self.optimizers:
            warnings.warn("configure_optimizers() returned None: training runs without an optimizer", stacklevel=3)
        self._manual_optimizers = [StepOptimizer(o, self._fit_loop) for o in self.optimizers]
        self._fit_loop.global_step = 0
        self._fit_loop.resume = None
        self._current_epoch = 0
        self._logging.reset_views()
        self.train_engine.state.max_epochs = None  # every fit() is a new run of the engine ...
        self.train_engine.state.max_iters = None
        if checkpoint is not None:  # ... unless it continues a checkpoint
            self._checkpoint.restore_training_state(checkpoint)
        self._log_hyperparams(model)
        val_loop = self._eval["validate"]
        val_loop.attach(model, dispatch)
        self._fit_loop.attach(model, dispatch, train_data, n_train)
        self._deadline_box[0] = time.monotonic() + self.max_time if self.max_time else 0.0
        self._fitting = True
        model.train()
        status = "failed"
        self._signals.install()  # the Trainer's one watch: the train loop's handlers hold it from attach()
        try:
            self.train_engine.run(train_data, max_epochs=self.max_epochs or 2**62, epoch_length=n_train)
            status = "success"
        except (KeyboardInterrupt, Preempted):
            status = "interrupted"
            raise
        finally:
            self._signals.uninstall()
            self._fitting = False
            self._fit_loop.detach()
            val_loop.detach()
            for lg in self.loggers:
                lg.finalize(status)

    def _evaluate(self, stage: str, model: Any, dispatch: Dispatch, loaders: Any) -> list[Any]:
        found = data_utils.find_loaders(stage, loaders, self.datamodule, model)
        loader_list = data_utils.as_loader_list(found, "dataloaders")
        if not loader_list:
            raise ValueError(f"trainer.{stage}() needs data: pass dataloaders, a datamodule, or define {data_utils.LOADER_METHODS[stage]}()")
        loader_list = [self._distributed_loader(dl, training=False) for dl in loader_list]
        counts = [data_utils.num_batches(dl, self.limits[stage], f"limit_{stage}_batches") for dl in loader_list]
        loop = self._eval[stage]
        self._logging.reset_views()
        loop.attach(model, dispatch)
        try:
            loop.run(loader_list, counts)
        finally:
            loop.detach()
            self._logging.save_loggers()
        return loader_list

    def _distributed_loader(self, loader: Any, training: bool) -> Any:
        """``loader`` split over the processes, keeping its own sampling (shuffle, generator seed,
        drop_last; see ember.distributed.sampler); unchanged in a one-process run or with
        ``use_distributed_sampler=False``."""
        if not self.use_distributed_sampler or self.world_size == 1:
            return loader
        from ember.distributed.sampler import distribute_loader

        seed = None
        if getattr(getattr(loader, "sampler", None), "generator", False) is None:
            # random order from the global RNG: every rank draws (keeping their RNGs in step), rank 0's seed wins
            seed = self.strategy.broadcast(int(torch.randint(0, 2**62, ()).item()))
        pad_eval = getattr(self.strategy, "pad_eval_shards", False)
        return distribute_loader(loader, self.world_size, self.global_rank, training, pad_eval=pad_eval, seed=seed)

    def _log_hyperparams(self, model: Any) -> None:
        if not self.loggers or not self.is_global_zero:
            return
        params: dict[str, Any] = {}
        if getattr(model, "_log_hyperparams", True) and isinstance(getattr(model, "hparams", None), dict):
            params.update(model.hparams)
        dm = self.datamodule
        if dm is not None and getattr(dm, "_log_hyperparams", True) and isinstance(getattr(dm, "hparams", None), dict):
            clash = sorted(k for k, v in self.datamodule.hparams.items() if k in params and params[k] != v)
            if clash:
                raise ValueError(
                    f"the model and the datamodule both have hyperparameters {clash} with different values; "
                    "rename one, or call save_hyperparameters(logger=False) on one of them"
                )
            params.update(self.datamodule.hparams)
        if params:
            for lg in self.loggers:
                lg.log_hyperparams(params)

    # ------------------------------------------------------------------ pieces used by the loops

    def _validation_due(self, epoch: int) -> bool:
        return bool(self._val_loaders) and epoch % self.check_val_every_n_epoch == 0 and _any_batches(self._val_counts)

    def _run_validation(self) -> None:
        if not self._val_loaders:
            return
        self._eval["validate"].run(self._val_loaders, self._val_counts)

    def _run_sanity_check(self) -> None:
        steps = self.num_sanity_val_steps
        if not self._val_loaders or steps == 0:
            return
        counts = [c if steps == -1 else (steps if c is None else min(c, steps)) for c in self._val_counts]
        if not _any_batches(counts):
            return
        dispatch = self._stage_dispatch
        self.sanity_checking = True
        self._logging.enabled = False
        try:
            dispatch.call("on_sanity_check_start")
            self._eval["validate"].run(self._val_loaders, counts)
            dispatch.call("on_sanity_check_end")
        finally:
            self.sanity_checking = False
            self._logging.enabled = True

    def _batch_transfer(self, module: Any, dataloader_idx: Any) -> Any:
        """A GET_BATCH_COMPLETED handler moving the batch to the device, or None if none is needed."""
        hooks = [h for h in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer") if overrides(module, h, Module)]
        needed = self.root_device.type != "cpu" or hooks or self.precision_plugin.param_dtype is not None
        if not needed:
            return None
        device = self.root_device
        before = getattr(module, "on_before_batch_transfer", None) if "on_before_batch_transfer" in hooks else None
        after = getattr(module, "on_after_batch_transfer", None) if "on_after_batch_transfer" in hooks else None
        move = getattr(module, "transfer_batch_to_device", None) or Module.transfer_batch_to_device.__get__(module)
        convert = self.precision_plugin.convert_input

        def transfer(engine: Engine) -> None:
            idx = dataloader_idx()
            batch = engine.state.batch
            if before is not None:
                batch = before(batch, idx)
            batch = convert(move(batch, device, idx))
            if after is not None:
                batch = after(batch, idx)
            engine.state.batch = batch

        return transfer

    def _step_scheduler(self, cfg: LRSchedulerConfig) -> None:
        metric = None
        if cfg.reduce_on_plateau:
            metrics = self.callback_metrics
            if cfg.monitor not in metrics:
                if cfg.strict:
                    raise ValueError(
                        f"ReduceLROnPlateau monitors {cfg.monitor!r}, which was not logged; logged: {sorted(metrics)}"
                    )
                warnings.warn(f"ReduceLROnPlateau: {cfg.monitor!r} not logged; scheduler not stepped", stacklevel=2)
                return
            metric = metrics[cfg.monitor]
        model = self.model
        if overrides(model, "lr_scheduler_step", Module):
            model.lr_scheduler_step(cfg.scheduler, metric)
        elif metric is None:
            cfg.scheduler.step()
        else:
            cfg.scheduler.step(metric)

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False) -> None:
        """Save the current state (everything needed to resume, or only the weights and
        hyperparameters with ``weights_only=True``) to ``filepath``, atomically; rank zero writes.
        In a distributed run call it on every process: FSDP gathers the weights from all of them
        (and with ``state_dict_type="sharded"`` each writes its shards into the directory ``filepath``)."""
        self._checkpoint.save(filepath, weights_only)

    def _dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        return self._checkpoint.dump(weights_only)

    def _save_preemption_checkpoint_and_exit(self) -> None:
        cb = self.checkpoint_callback
        directory = cb.dirpath if cb is not None and cb.dirpath else os.path.join(self.log_dir, "checkpoints")
        path = os.path.join(directory, "last.ckpt")
        self.save_checkpoint(path)
        if cb is not None:
            cb.last_model_path = path
        raise Preempted(self._signals.received or "a stop signal", path)

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [c for c in self._active_callbacks() if isinstance(c, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        """The first ``ModelCheckpoint`` callback (Lightning's name), or None."""
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        found = [c for c in self._active_callbacks() if isinstance(c, EarlyStopping)]
        return found[0] if found else None

    def _active_callbacks(self) -> list[Any]:
        return self._stage_dispatch.callbacks if self._stage_dispatch is not None else self.callbacks

    def _on_exception(self, engine: Engine, exception: BaseException) -> None:
        if exception is not self._handled_exception:
            self._handled_exception = exception
            dispatch = self._stage_dispatch
            if dispatch is not None:
                dispatch.call("on_exception", exception)
        raise exception

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Loop progress as plain values (the checkpoint format builds on this)."""
        return {"epoch": self._current_epoch, "global_step": self.global_step, "engine": self.train_engine.state_dict()}


def _any_batches(counts: list[int | None]) -> bool:
    """Whether loaders with these batch counts yield anything (None: no length, runs until the data ends)."""
    return any(c is None or c > 0 for c in counts)


def _attach_trainer(model: Any, trainer: Trainer) -> None:
    # plain object attribute: nn.Module.__setattr__ is slow and would register nothing useful here
    object.__setattr__(model, "_trainer", trainer)


def _print_results(stage: str, results: list[dict[str, float]]) -> None:
    rows = [(f"{k}" + (f" (dataloader {i})" if len(results) > 1 else ""), v) for i, r in enumerate(results) for k, v in r.items()]
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    title = f"{stage.capitalize()} results"
    print(title)
    print("-" * max(len(title), width + 14))
    for k, v in rows:
        print(f"{k.ljust(width)}  {v:>12.6g}" if math.isfinite(v) else f"{k.ljust(width)}  {v!s:>12}")
