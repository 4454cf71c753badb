"""``ember.Trainer``: Lightning's ``fit/validate/test/predict``, built on :class:`ember.engine.Engine`.

Every loop is an Engine run (``trainer.train_engine``, ``validate_engine``, ``test_engine``,
``predict_engine``; ``trainer.engine`` is the train engine), and every Module/Callback hook is
dispatched from a handler on one of their events. Where each hook fires::

    fit(module, train_dataloaders, val_dataloaders, datamodule, ckpt_path)
      [distributed: the strategy starts the other processes (once) or joins torchrun's/SLURM's
       process group; loaders get their samples split over the ranks, keeping their own order]
      configure_callbacks; prepare_data() of datamodule and module (local rank 0; the others wait);
      setup(stage=TrainerFn.FITTING) on datamodule, callbacks and module; configure_model; move to device;
      [ckpt_path: on_load_checkpoint, load weights]
      configure_optimizers, [ckpt_path: optimizer/scheduler/scaler/callback/loop states]
      SIGTERM / SIGUSR1 / first Ctrl-C: finish the step, save last.ckpt, raise Preempted
      train_engine.run(train data)
        STARTED              on_fit_start; sanity check (on_sanity_check_start, a short validation
                             that logs nothing, on_sanity_check_end); on_train_start (skipped, with
                             on_train_end, when should_stop or max_time already ends the run);
                             should_stop asked again: no epoch runs
        EPOCH_STARTED        on_train_epoch_start; should_stop asked (set: no batch, no validation,
                             the epoch's end hooks run); a fresh pass over the data is due: its iterator is
                             made at the first batch (on resume: rebuilt from the epoch's recorded RNG
                             states and advanced past the batches already consumed, see
                             ember.trainer.resume)
        GET_BATCH_COMPLETED  on_before_batch_transfer, transfer_batch_to_device, on_after_batch_transfer
                             (only when the device is not the CPU or a hook is overridden)
        ITERATION_STARTED    on_train_batch_start (returning -1 ends the epoch)
        process function     automatic optimization (ember.trainer.stepping), for the batch that ends an
                             accumulation window (every accumulate_grad_batches-th, and the epoch's last):
                               optimizer_step(epoch, batch_idx, optimizer, closure) -> optimizer.step(closure):
                                 closure: training_step (under autocast for mixed precision);
                                          on_before_zero_grad, optimizer_zero_grad (first micro-batch
                                          of the window); on_before_backward, backward, on_after_backward
                                 on_before_optimizer_step, gradient clipping, the update; global_step += 1
                               step-interval schedulers (not ReduceLROnPlateau); after the epoch's
                               last batch, epoch-interval ones (not ReduceLROnPlateau)
                             other micro-batches: the closure alone (DDP: without the gradient all-reduce)
                             manual optimization: training_step, which steps through self.optimizers()
        ITERATION_COMPLETED  on_train_batch_end; step values to loggers every log_every_n_steps;
                             validation when val_check_interval says so; then, when something may
                             require it, FitProgress.stop_reason() (signal, max_steps, max_time,
                             should_stop): a signal saves last.ckpt and exits; any other reason ends
                             the epoch (EPOCH_COMPLETED still runs and the epoch counts as completed,
                             as in Lightning; an epoch cut short by max_steps skips its validation),
                             then the run; step-interval ReduceLROnPlateau (a later handler)
        EPOCH_COMPLETED      validation (every check_val_every_n_epoch); on_train_epoch_end (where
                             ModelCheckpoint saves and EarlyStopping checks: they have the lowest
                             priority, so they run after everything that logs); epoch values to
                             loggers; epoch-interval ReduceLROnPlateau; FitProgress.stop_reason()
        COMPLETED            on_train_end, on_fit_end
        EXCEPTION_RAISED     on_exception, then the exception is re-raised
      teardown("fit")

    validation (inside fit: no_grad; validate(): inference_mode) on validate_engine, model.eval():
        STARTED on_validation_start · EPOCH_STARTED on_validation_epoch_start ·
        ITERATION_STARTED on_validation_batch_start · validation_step ·
        ITERATION_COMPLETED on_validation_batch_end · EPOCH_COMPLETED on_validation_epoch_end,
        epoch values to loggers · COMPLETED on_validation_end
    test() and predict(): the same with test_* / predict_* names.

Within one hook the callbacks run before the module, as in Lightning, except on
``on_train_epoch_end``, where the monitoring callbacks (ModelCheckpoint, EarlyStopping) run after
the module so that they see what it logged; callbacks run by ``priority`` (higher first), then in
list order. Validation inside fit leaves the training RNG stream as it was.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.engine import Engine
from ember.loggers.base import Logger
from ember.profilers import Profiler, resolve_profiler
from ember.runtime import Precision, Strategy, resolve_precision, resolve_strategy
from ember.trainer import arguments as args
from ember.trainer.checkpointing import CheckpointConnector
from ember.trainer.eval_loop import EvalLoop
from ember.trainer.fit_loop import FitLoop
from ember.trainer.hooks import Dispatch
from ember.trainer.logging import TrainerLogging
from ember.trainer.optimization import LRSchedulerConfig
from ember.trainer.preemption import SignalWatch
from ember.trainer.progress import FitProgress
from ember.trainer.results_table import print_results
from ember.trainer.spawn import apply_spawned_results, run_spawned_stage
from ember.trainer.stages import STAGE_OF, check_model, eval_ckpt_path, model_for, run_stage_here
from ember.trainer.stepping import StepOptimizer
from ember.trainer.views import TrainerFn, TrainerState, TrainerStatus, TrainerViews


class Trainer(TrainerViews):
    """Runs an ``ember.Module`` (or any ``nn.Module`` with the same methods) — see the module
    docstring for where each hook fires. Modules and callbacks see it as a
    :class:`~ember.context.RunContext`.

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
        limit_train_batches: int | float | None = 1.0,
        limit_val_batches: int | float | None = 1.0,
        limit_test_batches: int | float | None = 1.0,
        limit_predict_batches: int | float | None = 1.0,
        overfit_batches: int | float = 0.0,
        reload_dataloaders_every_n_epochs: int = 0,
        val_check_interval: int | float = 1.0,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int = 2,
        log_every_n_steps: int = 50,
        enable_checkpointing: bool = True,
        enable_progress_bar: bool = True,
        enable_model_summary: bool = True,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        deterministic: bool | str = False,
        inference_mode: bool = True,
        default_root_dir: str | os.PathLike = ".",
        detect_anomaly: bool = False,
        profiler: Profiler | str | None = None,
    ) -> None:
        """Checks every argument (an error names the argument, its value and what is allowed).

        Args:
            accelerator: Where to run: "cpu", "gpu"/"cuda", "mps" or "auto" (a GPU when there is one).
            strategy: How processes share the work: "auto", "ddp", "ddp_spawn", "fsdp", or a Strategy object.
            devices: How many devices (or which: a list of indices, "0,1") per node; "auto" uses all.
            num_nodes: How many machines take part in a distributed run.
            sync_batchnorm: Synchronize BatchNorm statistics across processes (distributed runs).
            use_distributed_sampler: Split each loader's samples over the processes (distributed runs).
            precision: Numeric precision: "32-true", "16-mixed", "bf16-mixed" or "64-true" (or 32, 16, "bf16", 64).
            logger: True (TensorBoard if installed, else CSV, under default_root_dir), False, a Logger or a list.
            callbacks: Callbacks to add to the default ones (progress bar, model summary, checkpointing).
            fast_dev_run: Run n batches (True: 1) of each loop to find bugs; loggers and checkpoints are off.
            max_epochs: Stop after this many epochs (-1: no limit; None: no limit, needs max_steps or max_time).
            min_epochs: Train at least this many epochs, even when early stopping asks to stop.
            max_steps: Stop after this many optimizer steps (None or -1: no step limit).
            min_steps: Train at least this many optimizer steps, even when early stopping asks to stop.
            max_time: Stop after this much time: "DD:HH:MM:SS", a dict of timedelta arguments or a timedelta.
            limit_train_batches: Training batches per epoch: a fraction of the loader (float) or a count (int).
            limit_val_batches: Validation batches per run: a fraction (float) or a count (int); 0 turns it off.
            limit_test_batches: Test batches: a fraction of the loader (float) or a count (int).
            limit_predict_batches: Predict batches: a fraction of the loader (float) or a count (int).
            overfit_batches: Train (and validate) on these first batches only, in order: a fraction or a count.
            reload_dataloaders_every_n_epochs: Ask the model/datamodule for new loaders every n epochs (0: never).
            val_check_interval: Validate every this fraction of an epoch (float) or this many batches (int).
            check_val_every_n_epoch: Validate every n training epochs (None: count val_check_interval across epochs).
            num_sanity_val_steps: Validation batches run before training to catch bugs (-1: all, 0: none).
            log_every_n_steps: Write step-level logged values every n training steps.
            enable_checkpointing: Add a ModelCheckpoint (keeping the latest epoch) unless one is given.
            enable_progress_bar: Show a progress bar (on a terminal; see ember.callbacks.ProgressBar).
            enable_model_summary: Print a summary of the model's layers when fit starts.
            accumulate_grad_batches: Accumulate gradients over this many batches per optimizer step.
            gradient_clip_val: Clip gradients to this value (None: no clipping).
            gradient_clip_algorithm: How to clip: "norm" (total gradient norm) or "value" (each element).
            deterministic: Use deterministic algorithms (True), "warn" on non-deterministic ones, or False.
            inference_mode: validate/test/predict under torch.inference_mode (True) or torch.no_grad (False).
            default_root_dir: Where logs and checkpoints go when no logger or callback says otherwise.
            detect_anomaly: Turn on autograd's anomaly detection (slow; finds the op that made a NaN).
            profiler: Time the run's hooks and steps: "simple", "advanced", "pytorch" or a Profiler (None: off).
        """
        self.precision = resolve_precision(precision)
        # devices/num_nodes/sync_batchnorm go to the strategy; "auto" is DDP for more than one process
        self.strategy = resolve_strategy(strategy, accelerator, devices, num_nodes, sync_batchnorm)
        args.check_flags(
            use_distributed_sampler=use_distributed_sampler,
            enable_checkpointing=enable_checkpointing,
            enable_progress_bar=enable_progress_bar,
            enable_model_summary=enable_model_summary,
            inference_mode=inference_mode,
            detect_anomaly=detect_anomaly,
        )
        self.use_distributed_sampler = use_distributed_sampler
        self.max_epochs, self.min_epochs, self.max_steps, self.min_steps, self.max_time = args.stopping_limits(
            max_epochs, min_epochs, max_steps, min_steps, max_time
        )
        self.limits = args.batch_limits(
            limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches
        )
        self.val_check_interval = args.check_val_check_interval(val_check_interval)
        self.check_val_every_n_epoch = args.check_val_every_n_epoch(check_val_every_n_epoch, self.val_check_interval)
        self.num_sanity_val_steps = args.int_arg("num_sanity_val_steps", num_sanity_val_steps, -1)
        self.log_every_n_steps = args.int_arg("log_every_n_steps", log_every_n_steps, 1)
        self.accumulate_grad_batches = args.int_arg("accumulate_grad_batches", accumulate_grad_batches, 1)
        self.gradient_clip_val, self.gradient_clip_algorithm = args.check_gradient_clipping(
            gradient_clip_val, gradient_clip_algorithm
        )
        self.default_root_dir = args.check_root_dir(default_root_dir)
        self.inference_mode = inference_mode
        self.detect_anomaly = detect_anomaly
        self.deterministic = args.apply_deterministic(deterministic)
        self.fast_dev_run = fast = args.fast_dev_run_batches(fast_dev_run)
        if fast:  # as Lightning: n batches of each loop; loggers off, checkpoint callbacks kept but idle
            self.max_epochs, self.max_steps, self.max_time = 1, fast, None
            self.limits = dict.fromkeys(self.limits, fast)
            self.val_check_interval, self.num_sanity_val_steps, self.log_every_n_steps = 1.0, 0, 1
            logger = False
        self.overfit_batches = args.overfit_batches(overfit_batches)
        if self.overfit_batches:  # as Lightning: these batches, in order, every epoch (the val loader's too)
            self.limits.update(train=self.overfit_batches, validate=self.overfit_batches)
        self.reload_dataloaders_every_n_epochs = args.int_arg(
            "reload_dataloaders_every_n_epochs", reload_dataloaders_every_n_epochs, 0
        )

        self.callbacks = args.init_callbacks(callbacks, enable_progress_bar, enable_model_summary)
        if enable_checkpointing and not fast and not any(isinstance(c, ModelCheckpoint) for c in self.callbacks):
            self.callbacks.append(ModelCheckpoint())
        elif not enable_checkpointing and any(isinstance(c, ModelCheckpoint) for c in self.callbacks):
            raise ValueError(
                "enable_checkpointing=False but a ModelCheckpoint is among the callbacks; remove one of them"
            )
        self._logging = TrainerLogging()
        self._logging.loggers = args.init_loggers(logger, self.default_root_dir)
        self._logging.sync = getattr(self.strategy, "sync_logged", None)  # sync_dist=True across processes
        #: What ``Module.log`` calls (the run context's ``log_value``): record a value for the running
        #: stage; nothing moves to the host. Bound here, not wrapped: ``self.log`` costs no extra call.
        self.log_value = self._logging.log
        #: Times hooks and steps when set ("simple", "advanced", "pytorch" or a Profiler; see
        #: ember.trainer.profiling); None gives a PassThroughProfiler and nothing is timed.
        self.profiler = resolve_profiler(profiler)
        self.precision_plugin = Precision(self.precision, self.root_device)
        self.fit_progress = FitProgress(self.max_epochs, self.min_epochs, self.max_steps, self.min_steps, self.max_time)
        self._fit_loop = FitLoop(self)
        self._checkpoint = CheckpointConnector(self)
        self._signals = SignalWatch(self.fit_progress.on_signal)
        self.train_engine = Engine(EvalLoop.unattached)
        self._eval = {stage: EvalLoop(self, stage) for stage in ("validate", "test", "predict")}
        self.state = TrainerState()  # also says whether the sanity check runs: trainer.sanity_checking
        self.optimizers: list[Any] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self.step_optimizers: list[StepOptimizer] = []
        self.model: Any = None
        self.datamodule: Any = None
        self._fitting = False
        self._val_loaders: list[Any] = []
        self._val_counts: list[int | None] = []
        self._val_check_batch: int | None = None
        self._eval_total_batches: int | None = None
        self._handled_exception: BaseException | None = None
        self._stage_dispatch: Dispatch | None = None
        self.num_training_batches: int | None = None

    # ------------------------------------------------------------------ the run context's calls

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """What ``Module.manual_backward`` calls: backward with the hooks and the precision's loss scaling."""
        self._fit_loop.manual_backward(loss, *args, **kwargs)

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
        ``"last"`` (the newest ``*.ckpt`` where this run's checkpoints go: a ModelCheckpoint's
        ``dirpath``, which may be an fsspec URL, or ``<log_dir>/checkpoints``; none found starts from
        scratch with a warning) or ``"best"``. A checkpoint from a logger's ``version_K`` folder (or
        ``"last"``) continues that folder: logs, checkpoints and top-k tracking go on there, and rows
        logged after the checkpoint are dropped (see ``CheckpointConnector.choose_run_folder``). A checkpoint saved as its run ended trains nothing more, except that a larger
        ``max_epochs``/``max_steps`` extends a run that reached its limit (one stopped by
        ``max_time`` continues with a new time budget; one that EarlyStopping ended stays ended).
        """
        check_model(model, "fit", ("training_step", "configure_optimizers"))
        self._run_stage(
            "fit", model, datamodule, ckpt_path, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders
        )

    def validate(
        self,
        model: Any = None,
        dataloaders: Any = None,
        ckpt_path: Any = None,
        verbose: bool = True,
        datamodule: Any = None,
    ) -> list[dict[str, float]]:
        """One pass over the validation data; returns one dict of logged metrics per dataloader.
        ``ckpt_path`` (a path, ``"best"`` or ``"last"``) loads those weights first."""
        return self._run_eval("validate", model, dataloaders, datamodule, verbose, ckpt_path)

    def test(
        self,
        model: Any = None,
        dataloaders: Any = None,
        ckpt_path: Any = None,
        verbose: bool = True,
        datamodule: Any = None,
    ) -> list[dict[str, float]]:
        """One pass over the test data; returns one dict of logged metrics per dataloader.
        ``ckpt_path`` (a path, ``"best"`` or ``"last"``) loads those weights first."""
        return self._run_eval("test", model, dataloaders, datamodule, verbose, ckpt_path)

    def predict(
        self,
        model: Any = None,
        dataloaders: Any = None,
        datamodule: Any = None,
        return_predictions: bool | None = None,
        ckpt_path: Any = None,
    ) -> list[Any] | None:
        """Returns ``predict_step`` outputs: a list per batch, or a list of such lists for several loaders
        (None with ``return_predictions=False``; the parameters are Lightning's, in its order)."""
        ckpt_path = eval_ckpt_path(self, "predict", model is not None, ckpt_path)
        model = model_for(self, model, "predict")
        check_model(model, "predict", ())
        if not callable(getattr(model, "predict_step", None)):  # ember.Module has a default; a plain nn.Module may not
            raise TypeError(
                f"{type(model).__name__} cannot be used with trainer.predict(): it does not define predict_step()"
            )
        self._eval["predict"].keep_predictions = return_predictions is not False
        loaders = self._run_stage("predict", model, datamodule, ckpt_path, dataloaders=dataloaders)
        preds = self._eval["predict"].predictions
        if return_predictions is False:
            return None
        return preds[0] if len(loaders) == 1 else preds

    def _run_eval(
        self, stage: str, model: Any, dataloaders: Any, datamodule: Any, verbose: bool, ckpt_path: Any
    ) -> list[dict[str, float]]:
        ckpt_path = eval_ckpt_path(self, stage, model is not None, ckpt_path)
        model = model_for(self, model, stage)
        check_model(model, stage, ("validation_step",) if stage == "validate" else ("test_step",))
        loaders = self._run_stage(stage, model, datamodule, ckpt_path, dataloaders=dataloaders)
        results = self._eval[stage].results_per_dataloader(len(loaders))
        if verbose and self.is_global_zero and any(results):
            print_results(stage, results)
        return results

    # ------------------------------------------------------------------ the run

    def _run_stage(self, stage: str, model: Any, datamodule: Any, ckpt_path: Any = None, **loaders: Any) -> list[Any]:
        """Run one stage in this process, or in every process when the strategy starts them: the
        script launcher starts the other ranks once and runs rank 0 here; ddp_spawn runs the stage
        in fresh processes and rank zero's results are copied back (ember.trainer.spawn)."""
        launcher = self.strategy.launcher
        if launcher is not None:
            if launcher.spawns:
                sent = launcher.launch(run_spawned_stage, self, stage, model, datamodule, ckpt_path, loaders)
                return apply_spawned_results(self, model, stage, sent)
            return launcher.launch(self._run_stage, stage, model, datamodule, ckpt_path, **loaders)
        self.state.fn, self.state.stage, self.state.status = TrainerFn(stage), STAGE_OF[stage], TrainerStatus.RUNNING
        try:
            self.strategy.setup_environment()  # joins the process group (a no-op on one device)
            out = run_stage_here(self, stage, model, datamodule, ckpt_path, **loaders)
        except BaseException as err:
            self.state.status = TrainerStatus.INTERRUPTED
            self.strategy.on_exception(err)  # distributed: the error says which rank raised it
            raise
        self.state.status, self.state.stage = TrainerStatus.FINISHED, None
        return out

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False) -> None:
        """Save the current state (everything needed to resume, or only the weights and
        hyperparameters with ``weights_only=True``) to ``filepath``, atomically; rank zero writes.
        In a distributed run call it on every process: FSDP gathers the weights from all of them
        (and with ``state_dict_type="sharded"`` each writes its shards into the directory ``filepath``)."""
        self._checkpoint.save(filepath, weights_only)
        self.strategy.barrier("save_checkpoint")  # the file exists for every process once this returns

    def dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        """The checkpoint dict ``save_checkpoint`` would write (plain values and tensors)."""
        return self._checkpoint.dump(weights_only)

    def _on_exception(self, engine: Engine, exception: BaseException) -> None:
        if exception is not self._handled_exception:
            self._handled_exception = exception
            self.state.status = TrainerStatus.INTERRUPTED  # as Lightning: already so in on_exception
            dispatch = self._stage_dispatch
            if dispatch is not None:
                dispatch.call("on_exception", exception)
        raise exception

    def state_dict(self) -> dict[str, Any]:
        """Loop progress as plain values (the checkpoint format builds on this)."""
        return {"epoch": self.current_epoch, "global_step": self.global_step, "engine": self.train_engine.state_dict()}
