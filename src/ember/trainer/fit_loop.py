"""The training side of ``Trainer.fit``: the process function and the handlers on the train engine.

The Engine is the only loop. These handlers read and write one :class:`~ember.trainer.progress.FitProgress`
(global step, epoch, accumulation, stop requests) and take the position in the epoch from the Engine
(``state.epoch_iteration``). The process function is built once per run for the configuration at
hand (precision, accumulation, clipping, overridden hooks), so a plain run pays for none of what it
does not use; the optimizer step itself is :mod:`ember.trainer.stepping`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

from ember.checkpoint.rng import capture_rng_states, restore_rng_states
from ember.engine import Events, Priority
from ember.trainer.checkpointing import loader_generator
from ember.trainer.data import batch_transfer, eval_data, find_loaders, inner_loaders, train_data, val_check_batch
from ember.trainer.hooks import Dispatch
from ember.trainer.resume import EpochData, ResumePoint, fit_state_dict, load_fit_state
from ember.trainer.stepping import AutomaticOptimization, NoOptimizer, Stepper, manual_outputs, step_scheduler
from ember.trainer.stopping import agree_on_stop_requests, save_preemption_checkpoint_and_exit, stop_requested_now
from ember.trainer.views import RunningStage


class FitLoop:
    """Builds and attaches the training process function and handlers for one ``fit`` call."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.progress = trainer.fit_progress
        self.resume: ResumePoint | None = None  # what a checkpoint says about where to continue
        self.data: EpochData | None = None
        self.dispatch: Dispatch | None = None
        self.stepper: Stepper | None = None
        self._handles: list[Any] = []
        self._step_leftover: Any = None
        self._automatic: Any = None  # the AutomaticOptimization of this fit (None: manual optimization)
        self.paused_rng: dict[str, Any] | None = None
        # reload_dataloaders_every_n_epochs: where fit() got its loaders, and the epochs they were loaded at
        self.sources: dict[str, Any] = {}
        self.train_loaded_at: float | None = None
        self.val_loaded_at: float | None = None
        self._iteration_completed: Any = None
        self.training_started = False  # on_train_start ran (a stop requested before it skips training)

    # ------------------------------------------------------------------ attach / detach

    def attach(self, module: Any, dispatch: Dispatch, train_data: Any, epoch_length: int | None) -> None:
        tr = self.trainer
        engine = tr.train_engine
        self.module, self.dispatch = module, dispatch
        self.data = EpochData(train_data)
        self.sized = epoch_length is not None
        automatic = getattr(module, "automatic_optimization", True) is not False
        _check_optimization_mode(automatic, tr)
        self.stepper = Stepper(
            self.progress,
            dispatch,
            module,
            tr.precision_plugin.scaler,
            tr.gradient_clip_val,
            tr.gradient_clip_algorithm,
            tr.optimizers,
        )
        for opt in tr.step_optimizers:
            opt.stepper = self.stepper
        engine.process_function = self._automatic_process(module) if automatic else self._manual_process(module)
        on = self._on
        on(Events.STARTED, self._on_started)
        on(Events.EPOCH_STARTED, self._on_epoch_started)
        if dispatch.calls("on_train_batch_start"):
            on(Events.ITERATION_STARTED, self._on_iteration_started)
        self._iteration_completed = on(Events.ITERATION_COMPLETED, self._build_iteration_completed(dispatch))
        if self._automatic is not None and self._automatic.plateau_step_schedulers:  # after the batch's validation
            after = self._automatic.after_batch
            self._handles.append(engine.add_event_handler(Events.ITERATION_COMPLETED, after, priority=Priority.TRAINER - 1))
        self.train_loaded_at = self.val_loaded_at = None
        on(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        on(Events.COMPLETED, self._on_completed)
        self._handles.append(
            engine.add_event_handler(Events.EXCEPTION_RAISED, tr._on_exception, priority=Priority.TRAINER_LAST)
        )
        transfer = batch_transfer(module, tr.root_device, tr.precision_plugin, lambda: 0)
        if transfer is not None:
            on(Events.GET_BATCH_COMPLETED, transfer)

    def _on(self, event: Any, handler: Any) -> Any:
        handle = self.trainer.train_engine.add_event_handler(event, handler, priority=Priority.TRAINER)
        self._handles.append(handle)
        return handle

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.progress.stop_clock()

    # ------------------------------------------------------------------ the process functions

    def _manual_process(self, module: Any) -> Any:
        tr = self.trainer
        step = tr.precision_plugin.wrap(tr.strategy.training_step_fn(module))

        def manual_process(engine: Any, batch: Any) -> Any:
            return manual_outputs(step(batch, engine.state.epoch_iteration - 1))

        self._step_leftover = self._automatic = None
        return manual_process

    def _automatic_process(self, module: Any) -> Any:
        tr = self.trainer
        accumulate = tr.accumulate_grad_batches
        opt = tr.optimizers[0] if tr.optimizers else NoOptimizer()
        automatic = AutomaticOptimization(
            self.stepper,
            module,
            # the strategy's way in: DDP calls training_step through its forward (gradient sync bookkeeping)
            tr.precision_plugin.wrap(tr.strategy.training_step_fn(module)),
            opt,
            tr.step_optimizers[0] if tr.step_optimizers else opt,
            accumulate,
            # Distributed gradient accumulation: skip the gradient all-reduce on the micro-steps that do
            # not end in an optimizer step. Only when the epoch length is known: otherwise the last
            # micro-steps of an epoch could not be told apart and would step with unsynchronised grads.
            tr.strategy.no_sync() if accumulate > 1 and self.sized else None,
            tr.lr_scheduler_configs,
            lambda: tr.callback_metrics,
        )
        self._automatic = automatic
        self._step_leftover = automatic.step_leftover
        return automatic.process

    def manual_backward(self, loss: Any, *args: Any, **kwargs: Any) -> None:
        if self.stepper is None:
            raise RuntimeError("manual_backward() is for training_step while trainer.fit() runs")
        self.stepper.backward(loss, *args, **kwargs)

    # ------------------------------------------------------------------ handlers

    def _on_started(self, engine: Any) -> None:
        tr = self.trainer
        tr._logging.enter("train", engine)
        tr.state.stage = RunningStage.TRAINING
        self.dispatch.call("on_fit_start")
        self.run_sanity_check()
        self.training_started = False
        if self._stop_before_training(engine):  # asked in on_fit_start, or max_time=0: no on_train_start
            return
        epoch = self.progress.current_epoch
        if self.val_loaded_at is None and self.validation_epoch(epoch):  # as Lightning: loaded here, not later
            self.val_loaded_at = epoch
        self.dispatch.call("on_train_start")
        self.training_started = True
        self.progress.start_clock()
        self._stop_before_training(engine)  # asked in on_train_start: no epoch, on_train_end runs

    def _stop_before_training(self, engine: Any) -> bool:
        """As Lightning, a stop requested before the first epoch ends the run there (a resumed
        checkpoint decides for itself, at its first epoch's start)."""
        if self.resume is None and stop_requested_now(self.trainer, self.progress):
            engine.terminate()
            return True
        return False

    def fit_without_training(self) -> None:
        """``max_epochs=0``: on_fit_start, the sanity check, on_fit_end (Lightning's order)."""
        self.dispatch.call("on_fit_start")
        self.run_sanity_check()
        self.dispatch.call("on_fit_end")

    def _on_epoch_started(self, engine: Any) -> None:
        tr, progress = self.trainer, self.progress
        state = engine.state
        resume, self.resume = self.resume, None
        if resume is not None:
            if resume.epoch_end_pending:  # the tail of the epoch the checkpoint was saved in
                with warnings.catch_warnings():  # torch warns as this process has not stepped the optimizer yet
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                    self._step_epoch_schedulers(resume.epoch)
            if resume.finished:  # saved as the run ended: nothing is left to train
                progress.current_epoch = resume.epoch
                engine.terminate()
                return
        consumed = resume.batches if resume is not None else 0
        progress.epoch_cut_short = progress.skip_epoch_validation = False
        progress.current_epoch = state.epoch - 1
        if tr.reload_dataloaders_every_n_epochs and not consumed:
            self._reload_train_data_if_due(engine)
        if not self.sized:
            state.epoch_length = None  # the data decides where each epoch ends, every epoch
        loader = self.data.loader
        for dl in inner_loaders(loader):
            for s in (getattr(dl, "sampler", None), getattr(dl, "batch_sampler", None)):
                if hasattr(s, "set_epoch"):
                    s.set_epoch(progress.current_epoch)
        if resume is not None and not consumed:
            restore_rng_states(resume.rng)
            gen = loader_generator(loader)
            if gen is not None and resume.loader_generator is not None:
                gen.set_state(resume.loader_generator)  # it moved on during the epochs before
        ctx = tr._logging.ctx  # (the store keeps what on_train_start logged, as Lightning does)
        ctx.epoch_level = True
        self.dispatch.call("on_train_epoch_start")
        ctx.epoch_level = False
        if not consumed and stop_requested_now(tr, progress):  # as Lightning: asked before the first batch
            progress.epoch_cut_short = progress.skip_epoch_validation = True
            engine.terminate_epoch()
            return
        self.data.start_epoch(resume if consumed else None, self.module)
        # a fresh pass over the data every epoch, as in Lightning (the Engine would go on with the
        # iterator of the epoch before when an epoch is shorter than the data)
        engine.set_data(self.data)
        if consumed:  # saved at the batch where the run decided to stop?
            self._stop_mid_epoch(engine)
        elif state.epoch_length == 0 or (not self.sized and not self.data.peek()):
            # an epoch without data: its start and end hooks run, no validation (as Lightning)
            progress.skip_epoch_validation = True
            engine.terminate_epoch()

    def _reload_train_data_if_due(self, engine: Any) -> None:
        """``reload_dataloaders_every_n_epochs``: ask for the training loader again when it is due
        (the one fit() got counts as loaded at the first epoch), before ``on_train_epoch_start``."""
        tr, epoch = self.trainer, self.progress.current_epoch
        if self.train_loaded_at is None:
            self.train_loaded_at = epoch
        if epoch - self.train_loaded_at < tr.reload_dataloaders_every_n_epochs:
            return
        self.train_loaded_at = epoch
        found = find_loaders("train", self.sources.get("train"), tr.datamodule, self.module)
        self.data.loader, n, tr.num_training_batches = train_data(tr, found)
        self.sized = n is not None
        engine.state.epoch_length = n
        every = val_check_batch(tr.val_check_interval, n, tr.check_val_every_n_epoch)
        if every != tr._val_check_batch:  # the per-step handler holds it: build it again
            tr._val_check_batch = every
            self._iteration_completed.remove()
            self._iteration_completed = self._on(
                Events.ITERATION_COMPLETED, self._build_iteration_completed(self.dispatch)
            )

    def _reload_val_data_if_due(self) -> None:
        """The validation side of ``reload_dataloaders_every_n_epochs``, at a validation run."""
        tr, epoch = self.trainer, self.progress.current_epoch
        if self.val_loaded_at is None:  # fit()'s loaders stand for Lightning's first load, made here
            self.val_loaded_at = epoch
        if epoch - self.val_loaded_at < tr.reload_dataloaders_every_n_epochs:
            return
        self.val_loaded_at = epoch
        found = find_loaders("validate", self.sources.get("validate"), tr.datamodule, self.module)
        tr._val_loaders, tr._val_counts = eval_data(tr, found, "validate", fitting=True)

    def _on_iteration_started(self, engine: Any) -> None:
        state = engine.state
        batch_idx = state.epoch_iteration - 1
        answer = None
        for hook in self.dispatch.calls("on_train_batch_start"):
            answer = hook(state.batch, batch_idx)
        # as Lightning, only the module's -1 ends the epoch (its hook runs last)
        if answer is not None and answer == -1 and self.dispatch.module_hook("on_train_batch_start") is not None:
            engine.terminate_epoch()
            if self._automatic is not None:  # as Lightning: the epoch's last batch, its schedulers step
                self._automatic.step_epoch_schedulers()

    def _build_iteration_completed(self, dispatch: Dispatch) -> Any:
        tr, progress = self.trainer, self.progress
        batch_end = dispatch.calls("on_train_batch_end")
        log_every = tr.log_every_n_steps
        logging = tr._logging
        store = logging.store_for("train")
        val_every = tr._val_check_batch
        per_epoch = tr.check_val_every_n_epoch is not None  # else val_every counts batches across epochs
        # Several processes must stop at the same step, but their clocks, signals and callbacks' decisions
        # differ: under a distributed strategy every stop request is agreed by all of them every
        # log_every_n_steps steps and after each validation (one small collective), never per step.
        distributed = tr.world_size > 1
        manual = getattr(self.module, "automatic_optimization", True) is False
        loop = self

        def on_iteration_completed(engine: Any) -> None:
            state = engine.state
            batch_idx = state.epoch_iteration - 1
            for hook in batch_end:
                hook(state.output, state.batch, batch_idx)
            stepped = manual or not progress.micro  # the batch ended an accumulation window
            if stepped:  # as Lightning: step rows every log_every_n_steps such batches, at the step before
                progress.log_step = progress.batches_stepped
                if store.step_dirty and (progress.batches_stepped + 1) % log_every == 0:
                    logging.flush_steps(progress.batches_stepped, progress.current_epoch)
            validated = False
            if (
                val_every is not None
                and ((batch_idx if per_epoch else state.iteration - 1) + 1) % val_every == 0
                and batch_idx + 1 != state.epoch_length  # the epoch's last batch validates at EPOCH_COMPLETED
                and loop.validation_epoch(progress.current_epoch)
            ):
                loop.run_validation()
                validated = True
            if stepped:
                progress.batches_stepped += 1
                progress.counted_iteration = state.iteration  # see FitProgress.batch_end_pending
            if not distributed:
                if progress.global_step >= progress.ask_at_step:
                    loop._stop_mid_epoch(engine, validated)
            elif progress.global_step >= progress.step_limit:  # the same step on every process
                loop._stop_mid_epoch(engine, validated)
            elif validated or state.iteration % log_every == 0:
                agree_on_stop_requests(tr, progress)
                loop._stop_mid_epoch(engine, validated)

        return on_iteration_completed

    def _stop_mid_epoch(self, engine: Any, validated: bool = False) -> None:
        """Act on :meth:`FitProgress.stop_reason` inside an epoch: a signal saves a checkpoint and
        exits (once an accumulation in progress has stepped); any other reason ends the epoch first
        (as in Lightning: its end hooks run, its epoch values are logged and it counts as completed)
        and the run stops at its EPOCH_COMPLETED. ``validated``: this batch ran its validation
        already (as Lightning, the stop does not run another)."""
        progress = self.progress
        reason = progress.stop_reason()
        if reason is None:
            return
        if reason == "signal":
            if not progress.micro:
                save_preemption_checkpoint_and_exit(self.trainer, progress)
            return
        state = engine.state
        if validated:
            progress.skip_epoch_validation = True
        if reason == "max_steps":  # Lightning validates only when the last batch of the epoch was reached
            if state.epoch_length is None:  # data without a length: Lightning knows, having fetched one ahead
                progress.skip_epoch_validation = not self.data.exhausted()
            else:
                progress.skip_epoch_validation = state.epoch_iteration != state.epoch_length
        progress.epoch_cut_short = True
        engine.terminate_epoch()

    def _on_epoch_completed(self, engine: Any) -> None:
        tr, progress = self.trainer, self.progress
        state = engine.state
        if progress.micro and not progress.epoch_cut_short and self._step_leftover is not None:
            self._step_leftover(state.epoch_iteration - 1)  # leftover micro-batches of an epoch of unknown length
        automatic = self._automatic  # its schedulers step where Lightning's do (see AutomaticOptimization)
        if automatic is not None and not self.sized and not progress.epoch_cut_short:
            automatic.step_epoch_schedulers()  # a sized epoch's last batch stepped them
        if self.validation_due_at_epoch_end(state):
            self.run_validation()
        if automatic is not None and automatic.plateau_step_schedulers and state.epoch_iteration == state.epoch_length:
            automatic.step_plateau_schedulers(state.epoch_iteration - 1)  # the last batch's, after its validation
        logging = tr._logging
        ctx = logging.ctx
        ctx.epoch_level = True
        progress.in_epoch_end = True  # a checkpoint saved from here on must redo the scheduler step on resume
        self.dispatch.call("on_train_epoch_end")
        # as Lightning: epoch rows at the step of the epoch's last batch (one before the count)
        logging.finish_epoch(ctx.store, progress.batches_stepped - 1, epoch=progress.current_epoch)
        if not progress.epoch_cut_short:
            self._step_epoch_schedulers(state.epoch)
        progress.in_epoch_end = False
        logging.save_loggers()
        progress.current_epoch = state.epoch
        ctx.epoch_level = False
        if tr.world_size > 1:  # all processes stop at the same epoch if any of them wants to
            agree_on_stop_requests(tr, progress)
        reason = progress.stop_reason(at_epoch_end=True)
        if reason == "signal":
            save_preemption_checkpoint_and_exit(tr, progress)
        elif reason is not None and reason != "max_epochs":  # the Engine's own max_epochs ends the run
            engine.terminate()

    def _step_epoch_schedulers(self, epoch: int) -> None:
        """After on_train_epoch_end: the "epoch" ReduceLROnPlateau schedulers (see AutomaticOptimization)."""
        if getattr(self.module, "automatic_optimization", True) is False:
            return  # as in Lightning: under manual optimization the module steps its schedulers itself
        tr = self.trainer
        for cfg in tr.lr_scheduler_configs:
            if cfg.reduce_on_plateau and cfg.interval == "epoch" and epoch % cfg.frequency == 0:
                step_scheduler(cfg, self.module, tr.callback_metrics)

    # ------------------------------------------------------------------ validation inside fit

    def validation_epoch(self, epoch: int) -> bool:
        """Whether the epoch of 0-based index ``epoch`` validates (``check_val_every_n_epoch``)."""
        tr = self.trainer
        every = tr.check_val_every_n_epoch
        return bool(tr._val_loaders) and (every is None or (epoch + 1) % every == 0) and _any_batches(tr._val_counts)

    def validation_due_at_epoch_end(self, state: Any) -> bool:
        """As Lightning: the epoch's last batch validates when it is a validation batch (always with
        ``val_check_interval=1.0``), in an epoch that validates; so does an epoch ended early to stop
        (not one cut short by max_steps)."""
        tr = self.trainer
        if not self.validation_epoch(state.epoch - 1) or self.progress.skip_epoch_validation:
            return False
        every = tr._val_check_batch
        if every is None or self.progress.epoch_cut_short:  # stopping early validates first, as Lightning
            return True
        position = state.epoch_iteration if tr.check_val_every_n_epoch is not None else state.iteration
        return position % every == 0

    def run_validation(self) -> None:
        tr = self.trainer
        if tr.reload_dataloaders_every_n_epochs:
            self._reload_val_data_if_due()
        if tr._val_loaders:
            with self._training_rng_kept():
                tr._eval["validate"].run(tr._val_loaders, tr._val_counts)

    @contextlib.contextmanager
    def _training_rng_kept(self) -> Iterator[None]:
        """Validation inside fit leaves the training RNG stream as it was (making its loaders'
        iterators draws from it): a run resumes bitwise whether or not a checkpoint fell on a
        validation. A checkpoint written meanwhile records the training states (see
        :meth:`training_rng_states`)."""
        self.paused_rng = capture_rng_states()
        try:
            yield
        finally:
            restore_rng_states(self.paused_rng)
            self.paused_rng = None

    def training_rng_states(self) -> dict[str, Any]:
        """The RNG states training continues from (kept aside while validation runs)."""
        return self.paused_rng if self.paused_rng is not None else capture_rng_states()

    def run_sanity_check(self) -> None:
        tr = self.trainer
        steps = tr.num_sanity_val_steps
        if not tr._val_loaders or steps == 0:
            return
        counts = [c if steps == -1 else (steps if c is None else min(c, steps)) for c in tr._val_counts]
        if not _any_batches(counts):
            return
        epoch = self.progress.current_epoch  # as Lightning: a sanity check outside a validating epoch
        self.val_loaded_at = epoch if self.validation_epoch(epoch) else -math.inf  # reloads at the first one
        tr.sanity_checking = True
        tr._logging.enabled = False
        try:
            self.dispatch.call("on_sanity_check_start")
            with self._training_rng_kept():
                tr._eval["validate"].run(tr._val_loaders, counts)
            self.dispatch.call("on_sanity_check_end")
        finally:
            tr.sanity_checking = False
            tr._logging.enabled = True

    def _on_completed(self, engine: Any) -> None:
        if self.training_started:  # (a stop requested before training skips on_train_start and _end)
            self.dispatch.call("on_train_end")
        self.dispatch.call("on_fit_end")

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands, for an exact resume (see ember.trainer.resume)."""
        tr = self.trainer
        return fit_state_dict(self.progress, tr.train_engine, self.data, tr.model, tr.callback_metrics)

    def load_state_dict(self, state: dict[str, Any], rng_states: dict[str, Any] | None) -> None:
        """Set the loop up to continue where ``state`` was saved; applied when the first epoch starts."""
        tr = self.trainer
        tr._logging.restore_callback_metrics(state.get("callback_metrics", {}))
        self.resume = load_fit_state(state, rng_states, self.progress, tr.train_engine)


def _any_batches(counts: list[int | None]) -> bool:
    """Whether loaders with these batch counts yield anything (None: no length, runs until the data ends)."""
    return any(c is None or c > 0 for c in counts)


def _check_optimization_mode(automatic: bool, tr: Any) -> None:
    if automatic and len(tr.optimizers) > 1:
        raise ValueError(
            f"configure_optimizers() returned {len(tr.optimizers)} optimizers; automatic optimization uses one. "
            "Set self.automatic_optimization = False and step them yourself"
        )
    if not automatic:  # as in Lightning: these only act in automatic optimization
        for name, value, off in (
            ("accumulate_grad_batches", tr.accumulate_grad_batches, 1),
            ("gradient_clip_val", tr.gradient_clip_val, None),
        ):
            if value != off:
                raise ValueError(
                    f"{name}={value!r} has no effect with manual optimization (automatic_optimization=False); "
                    f"leave it at {off!r} and accumulate or clip in training_step (self.clip_gradients)"
                )
