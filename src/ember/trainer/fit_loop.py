"""The training side of ``Trainer.fit``: the process function and the handlers on the train engine.

The process function is built once per run for the configuration at hand (precision, gradient
accumulation, clipping, overridden hooks), so a plain run pays for none of what it does not use.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import IterableDataset

from ember.checkpoint.rng import restore_rng_states
from ember.engine import Events, Priority
from ember.module import Module
from ember.trainer.checkpointing import epoch_start_rng, loader_generator, restore_epoch_start_rng
from ember.trainer.hooks import Dispatch, overrides

if TYPE_CHECKING:
    from ember.trainer.trainer import Trainer


class StepOptimizer:
    """An optimizer as the module sees it under manual optimization (``self.optimizers()``) and in
    an overridden ``optimizer_step``: ``step()`` applies the precision's scaler, runs the
    ``on_before_optimizer_step`` hooks and counts the global step. Everything else is forwarded."""

    def __init__(self, optimizer: Any, loop: FitLoop, clip: Any = None) -> None:
        self.optimizer = optimizer
        self._loop = loop
        self._clip = clip  # the Trainer's gradient clipping, applied in automatic optimization only

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        loop = self._loop
        for hook in loop.dispatch.calls("on_before_optimizer_step"):
            hook(self.optimizer)
        scaler = loop.scaler
        if self._clip is not None:
            self._clip(self.optimizer)
        if scaler is not None:
            if closure is not None:
                closure()
            out = scaler.step(self.optimizer, **kwargs)
            scaler.update()
        else:
            out = self.optimizer.step(closure=closure, **kwargs) if closure is not None else self.optimizer.step(**kwargs)
        loop.global_step += 1
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        for hook in self._loop.dispatch.calls("on_before_zero_grad"):
            hook(self.optimizer)
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"StepOptimizer({self.optimizer!r})"


class FitLoop:
    """Builds and attaches the training process function and handlers for one ``fit`` call."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.global_step = 0
        self.epoch_base = 1  # state.iteration of the epoch's first batch
        self.micro = 0  # micro-batches accumulated since the last optimizer step
        self.resume: dict[str, Any] | None = None  # what a checkpoint says about where to continue
        self.epoch_rng: dict[str, Any] | None = None  # RNG states that made this epoch's data order
        self.in_epoch_end = False  # between on_train_epoch_end and the epoch schedulers' step
        self.stopping = False  # the epoch was ended early to stop the run at its EPOCH_COMPLETED
        self.skip_epoch_validation = False
        self.dispatch: Dispatch | None = None  # type: ignore[assignment]
        self.scaler: Any = None
        self._handles: list[Any] = []

    # ------------------------------------------------------------------ attach / detach

    def attach(self, module: Any, dispatch: Dispatch, train_data: Any, epoch_length: int | None) -> None:
        tr = self.trainer
        engine = tr.train_engine
        self.module, self.dispatch, self.train_data = module, dispatch, train_data
        self.sized = epoch_length is not None
        self.scaler = tr.precision_plugin.scaler
        self.micro = 0
        self.stopping = self.skip_epoch_validation = False
        automatic = getattr(module, "automatic_optimization", True) is not False
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
        engine.process_function = self._build_process(module, dispatch)
        on = self._on
        on(Events.STARTED, self._on_started)
        on(Events.EPOCH_STARTED, self._on_epoch_started)
        if dispatch.calls("on_train_batch_start"):
            on(Events.ITERATION_STARTED, self._on_iteration_started)
        on(Events.ITERATION_COMPLETED, self._build_iteration_completed(dispatch))
        on(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        on(Events.COMPLETED, self._on_completed)
        self._handles.append(engine.add_event_handler(Events.EXCEPTION_RAISED, tr._on_exception, priority=Priority.TRAINER_LAST))
        transfer = tr._batch_transfer(module, lambda: 0)
        if transfer is not None:
            on(Events.GET_BATCH_COMPLETED, transfer)

    def _on(self, event: Any, handler: Any) -> None:
        self._handles.append(self.trainer.train_engine.add_event_handler(event, handler, priority=Priority.TRAINER))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ the step

    def _build_process(self, module: Any, dispatch: Dispatch) -> Any:
        tr = self.trainer
        # the strategy's way in: DDP calls training_step through its forward (gradient sync bookkeeping)
        step = tr.precision_plugin.wrap(tr.strategy.training_step_fn(module))
        if getattr(module, "automatic_optimization", True) is False:  # plain nn.Modules have no such attribute

            def manual_process(engine: Any, batch: Any) -> Any:
                return step(batch, engine.state.iteration - self.epoch_base)

            return manual_process

        accumulate = tr.accumulate_grad_batches
        scaler = self.scaler
        before_backward = dispatch.calls("on_before_backward")
        after_backward = dispatch.calls("on_after_backward")
        backward = module.backward if overrides(module, "backward", Module) else None
        optimizer_step = self._optimizer_step = self._build_optimizer_step(module, dispatch)
        loop = self

        def training_process(engine: Any, batch: Any) -> Any:
            state = engine.state
            batch_idx = state.iteration - loop.epoch_base
            out = step(batch, batch_idx)
            if type(out) is torch.Tensor:
                loss = out
            elif out is None:
                return None
            elif isinstance(out, Mapping):
                loss = out.get("loss")
                if not isinstance(loss, torch.Tensor):
                    raise ValueError(f"training_step returned a dict without a tensor under 'loss' (keys: {sorted(out)})")
            elif isinstance(out, torch.Tensor):
                loss = out
            else:
                raise TypeError(f"training_step must return a loss tensor, a dict with 'loss', or None; got {type(out).__name__}")
            if accumulate != 1:
                loss = loss / accumulate
            for hook in before_backward:
                hook(loss)
            if scaler is not None:
                scaler.scale(loss).backward()
            elif backward is not None:
                backward(loss)
            else:
                loss.backward()
            for hook in after_backward:
                hook()
            loop.micro += 1
            if loop.micro >= accumulate or batch_idx + 1 == state.epoch_length:
                optimizer_step(batch_idx)
            return out

        # Distributed gradient accumulation: skip the gradient all-reduce on the micro-steps that do
        # not end in an optimizer step. Only when the epoch length is known: otherwise the last
        # micro-steps of an epoch could not be told apart and would step with unsynchronised grads.
        no_sync = tr.strategy.no_sync() if accumulate > 1 and self.sized else None
        if no_sync is None:
            return training_process

        def accumulating_process(engine: Any, batch: Any) -> Any:
            state = engine.state
            if loop.micro + 1 >= accumulate or state.iteration - loop.epoch_base + 1 == state.epoch_length:
                return training_process(engine, batch)  # this micro-step steps: its backward syncs
            with no_sync():
                return training_process(engine, batch)

        return accumulating_process

    def _build_optimizer_step(self, module: Any, dispatch: Dispatch) -> Any:
        tr = self.trainer
        optimizers = tr.optimizers
        if not optimizers:

            def no_optimizer_step(batch_idx: int) -> None:
                self.micro = 0
                self.global_step += 1

            return no_optimizer_step
        opt = optimizers[0]
        scaler = self.scaler
        before_step = dispatch.calls("on_before_optimizer_step")
        before_zero = dispatch.calls("on_before_zero_grad")
        clip_val = tr.gradient_clip_val
        clip_alg = tr.gradient_clip_algorithm
        custom_clip = overrides(module, "configure_gradient_clipping", Module)
        custom_step = overrides(module, "optimizer_step", Module)
        custom_zero = overrides(module, "optimizer_zero_grad", Module)
        params = [p for group in opt.param_groups for p in group["params"]]

        def clip(optimizer: Any) -> None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            if custom_clip:
                module.configure_gradient_clipping(optimizer, clip_val, clip_alg)
            elif clip_alg == "value":
                torch.nn.utils.clip_grad_value_(params, clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, clip_val)

        clipping = clip if (clip_val or custom_clip) else None
        wrapped = StepOptimizer(opt, self, clipping) if custom_step else None
        step_schedulers = [c for c in tr.lr_scheduler_configs if c.interval == "step"]
        loop = self

        def optimizer_step(batch_idx: int) -> None:
            loop.micro = 0
            if custom_step:
                module.optimizer_step(tr.current_epoch, batch_idx, wrapped, None)  # counts the step itself
            else:
                for hook in before_step:
                    hook(opt)
                if clipping is not None:
                    clipping(opt)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                loop.global_step += 1
            for hook in before_zero:
                hook(opt)
            if custom_zero:
                module.optimizer_zero_grad(tr.current_epoch, batch_idx, opt)
            else:
                opt.zero_grad(set_to_none=True)
            for cfg in step_schedulers:
                if loop.global_step % cfg.frequency == 0:
                    tr._step_scheduler(cfg)

        return optimizer_step

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        dispatch = self.dispatch
        for hook in dispatch.calls("on_before_backward"):
            hook(loss)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        if overrides(self.module, "backward", Module):
            self.module.backward(loss, *args, **kwargs)
        else:
            loss.backward(*args, **kwargs)
        for hook in dispatch.calls("on_after_backward"):
            hook()

    # ------------------------------------------------------------------ handlers

    def _on_started(self, engine: Any) -> None:
        tr = self.trainer
        tr._logging.enter("train", engine)
        self.dispatch.call("on_fit_start")
        tr._run_sanity_check()
        self.dispatch.call("on_train_start")

    def _on_epoch_started(self, engine: Any) -> None:
        tr = self.trainer
        state = engine.state
        resume, self.resume = self.resume, None
        if resume is not None:
            if resume["epoch_end_pending"]:  # the tail of the epoch the checkpoint was saved in
                with warnings.catch_warnings():  # torch warns as this process has not stepped the optimizer yet
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                    self._step_epoch_schedulers(resume["epoch"])
            if resume["finished"]:  # saved as the run ended: nothing is left to train
                tr._current_epoch = resume["epoch"]
                engine.terminate()
                return
        consumed = resume["batches"] if resume is not None else 0
        self.epoch_base = state.iteration + 1 - consumed
        self.stopping = self.skip_epoch_validation = False
        tr._current_epoch = state.epoch - 1
        if not self.sized:
            state.epoch_length = None  # the data decides where each epoch ends
        sampler = getattr(self.train_data, "sampler", None)
        for s in (sampler, getattr(self.train_data, "batch_sampler", None)):
            if hasattr(s, "set_epoch"):
                s.set_epoch(tr._current_epoch)
        if resume is not None and not consumed:
            restore_rng_states(resume["rng"])
            gen = loader_generator(self.train_data)
            if gen is not None and resume.get("loader_generator") is not None:
                gen.set_state(resume["loader_generator"])  # it moved on during the epochs before
        ctx = tr._logging.ctx
        ctx.store.reset()
        ctx.epoch_level = True
        self.dispatch.call("on_train_epoch_start")
        ctx.epoch_level = False
        # A fresh pass over the data every epoch, as in Lightning. The iterator is made here, after
        # the hooks, from RNG states recorded first, so a checkpoint can rebuild this epoch's order.
        if consumed:
            self.epoch_rng = resume["epoch_rng"]
            data_iter = self._resumed_iterator(resume)
        else:
            self.epoch_rng = epoch_start_rng(self.train_data)
            data_iter = iter(self.train_data)
        engine.set_data(_Started(data_iter, self.train_data))
        if consumed and (tr.should_stop or (tr.max_steps is not None and self.global_step >= tr.max_steps)):
            self._maybe_stop(engine, mid_epoch=True)  # saved at the batch where the run decided to stop

    def _resumed_iterator(self, resume: dict[str, Any]) -> Any:
        """This epoch's iterator, positioned after the batches consumed before the checkpoint."""
        data = self.train_data
        dataset = getattr(data, "dataset", None)
        if isinstance(dataset, IterableDataset):
            if resume.get("dataset") is not None and callable(getattr(dataset, "load_state_dict", None)):
                dataset.load_state_dict(resume["dataset"])
            else:
                warnings.warn(
                    "resuming mid-epoch over an IterableDataset without state_dict/load_state_dict: "
                    "the interrupted epoch's data starts again from its beginning",
                    stacklevel=2,
                )
            data_iter = iter(data)
        else:
            restore_epoch_start_rng(data, resume["epoch_rng"])
            data_iter = iter(data)
            for _ in range(resume["batches"]):
                next(data_iter)
        restore_rng_states(resume["rng"])
        if resume.get("grads"):
            params = dict(self.module.named_parameters())
            for name, grad in resume["grads"].items():
                params[name].grad = grad.to(params[name].device)
        self.micro = resume.get("micro", 0)
        return data_iter

    def _on_iteration_started(self, engine: Any) -> None:
        state = engine.state
        batch_idx = state.iteration - self.epoch_base
        for hook in self.dispatch.calls("on_train_batch_start"):
            if hook(state.batch, batch_idx) == -1:
                engine.terminate_epoch()

    def _build_iteration_completed(self, dispatch: Dispatch) -> Any:
        tr = self.trainer
        batch_end = dispatch.calls("on_train_batch_end")
        log_every = tr.log_every_n_steps
        logging = tr._logging
        store = logging.store_for("train")
        val_every = tr._val_check_batch
        max_steps = tr.max_steps if tr.max_steps is not None else math.inf
        # Several processes must stop at the same step, but their clocks differ: under a distributed
        # strategy max_time is checked every log_every_n_steps steps, agreed by all of them.
        distributed = tr.world_size > 1
        deadline_box = [0.0] if distributed else tr._deadline_box
        agree_every = log_every if distributed and tr.max_time else 0
        signals = tr._signals
        loop = self

        def on_iteration_completed(engine: Any) -> None:
            state = engine.state
            batch_idx = state.iteration - loop.epoch_base
            for hook in batch_end:
                hook(state.output, state.batch, batch_idx)
            if store.step_dirty and state.iteration % log_every == 0:
                logging.flush_steps(loop.global_step)
            if agree_every and state.iteration % agree_every == 0 and loop._past_deadline_everywhere():
                tr.should_stop = True
            if val_every is not None and (batch_idx + 1) % val_every == 0 and batch_idx + 1 != state.epoch_length:
                tr._run_validation()
            if (
                loop.global_step >= max_steps
                or tr.should_stop
                or signals.received is not None
                or (deadline_box[0] and time.monotonic() >= deadline_box[0])
            ):
                loop._maybe_stop(engine, mid_epoch=True)

        return on_iteration_completed

    def _maybe_stop(self, engine: Any, mid_epoch: bool) -> None:
        """Stop when max_steps, max_time or should_stop say so. Mid-epoch, the epoch is ended first
        (as in Lightning: its end hooks run, its epoch values are logged and it counts as completed)
        and the run stops at its EPOCH_COMPLETED."""
        tr = self.trainer
        if tr._signals.received is not None:
            if not (mid_epoch and self.micro):  # an accumulation in progress finishes first
                tr._save_preemption_checkpoint_and_exit()
            return
        if tr.max_steps is not None and self.global_step >= tr.max_steps:
            # Lightning validates only when the last batch of the epoch was reached
            self.skip_epoch_validation = mid_epoch and engine.state.iteration - self.epoch_base + 1 != engine.state.epoch_length
        elif tr._deadline_box[0] and time.monotonic() >= tr._deadline_box[0]:
            tr.should_stop = True
        elif not (tr.should_stop and tr.current_epoch >= (tr.min_epochs or 0) and self.global_step >= (tr.min_steps or 0)):
            return
        if mid_epoch:
            self.stopping = True
            engine.terminate_epoch()
        else:
            engine.terminate()

    def _on_epoch_completed(self, engine: Any) -> None:
        tr = self.trainer
        state = engine.state
        if self.micro and not self.stopping:  # leftover micro-batches of an epoch whose length was not known
            self._optimizer_step(state.iteration - self.epoch_base)
        if tr._validation_due(state.epoch) and not self.skip_epoch_validation:
            tr._run_validation()
        logging = tr._logging
        ctx = logging.ctx
        ctx.epoch_level = True
        self.in_epoch_end = True  # a checkpoint saved from here on must redo the scheduler step on resume
        self.dispatch.call("on_train_epoch_end")
        logging.finish_epoch(ctx.store, self.global_step, epoch=tr._current_epoch)
        self._step_epoch_schedulers(state.epoch)
        self.in_epoch_end = False
        logging.save_loggers()
        tr._current_epoch = state.epoch
        ctx.epoch_level = False
        if tr.world_size > 1:  # all processes stop at the same epoch if any of them wants to (one collective each)
            tr.should_stop = self._past_deadline_everywhere(local_decision=tr.should_stop)
        if (
            self.stopping
            or tr._signals.received is not None
            or tr.should_stop
            or self.global_step >= (tr.max_steps if tr.max_steps is not None else math.inf)
            or (tr._deadline_box[0] and time.monotonic() >= tr._deadline_box[0])
        ):
            self._maybe_stop(engine, mid_epoch=False)

    def _past_deadline_everywhere(self, local_decision: bool = False) -> bool:
        """Whether any process has passed max_time (or, with ``local_decision``, wants to stop);
        one collective, so every process must call it at the same point."""
        box = self.trainer._deadline_box
        past = local_decision or bool(box[0] and time.monotonic() >= box[0])
        return self.trainer.strategy.reduce_boolean_decision(past, all=False)

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands, for an exact resume (see ember.trainer.checkpointing)."""
        tr = self.trainer
        engine_state = tr.train_engine.state_dict()
        state: dict[str, Any] = {
            "engine": engine_state,
            "global_step": self.global_step,
            "current_epoch": tr._current_epoch,
            "batches": engine_state["epoch_iteration"],
            "epoch_rng": self.epoch_rng,
            "epoch_end_pending": self.in_epoch_end,
            "micro": self.micro,
            # a run that decided to end stays ended on resume; one stopped by max_time continues (a new time budget)
            "should_stop": bool(tr.should_stop) and not (tr._deadline_box[0] and time.monotonic() >= tr._deadline_box[0]),
            "callback_metrics": {k: float(v) for k, v in tr.callback_metrics.items()},
        }
        gen = loader_generator(getattr(self, "train_data", None))
        if gen is not None:  # a loader's own generator is not among the global RNG states
            state["loader_generator"] = gen.get_state()
        if self.micro:  # gradients accumulated since the last optimizer step
            state["grads"] = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}
        dataset = getattr(getattr(self, "train_data", None), "dataset", None)
        if isinstance(dataset, IterableDataset) and callable(getattr(dataset, "state_dict", None)):
            state["dataset"] = dataset.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], rng_states: dict[str, Any] | None) -> None:
        """Set the loop up to continue where ``state`` was saved; applied when the first epoch starts."""
        tr = self.trainer
        # this fit's max_epochs decides where the run ends (it may extend a finished one), not the saved run's
        engine_state = {**state["engine"], "max_epochs": tr.max_epochs or 2**62, "max_iters": None}
        tr.train_engine.load_state_dict(engine_state)
        self.global_step = int(state["global_step"])
        tr._current_epoch = int(state["current_epoch"])
        tr.should_stop = bool(state.get("should_stop", False))
        tr._logging.callback.update({k: torch.tensor(v) for k, v in state.get("callback_metrics", {}).items()})
        batches = int(state.get("batches", 0))
        epoch = int(state["engine"]["epoch"])
        finished = not batches and (
            epoch >= (tr.max_epochs or 2**62)
            or (tr.max_steps is not None and self.global_step >= tr.max_steps)
            or (tr.should_stop and epoch >= (tr.min_epochs or 0) and self.global_step >= (tr.min_steps or 0))
        )
        self.resume = {
            "batches": batches,
            "epoch": epoch,  # at an epoch boundary: epochs completed
            "finished": finished,
            "epoch_rng": state.get("epoch_rng"),
            "epoch_end_pending": bool(state.get("epoch_end_pending", False)),
            "micro": int(state.get("micro", 0)),
            "grads": state.get("grads"),
            "dataset": state.get("dataset"),
            "loader_generator": state.get("loader_generator"),
            "rng": rng_states or {},
        }
        if self.resume["batches"] and self.resume["epoch_rng"] is None:
            raise ValueError("the checkpoint was saved mid-epoch without the epoch's RNG states; it cannot resume there")

    def _step_epoch_schedulers(self, epoch: int) -> None:
        if getattr(self.module, "automatic_optimization", True) is False:
            return  # as in Lightning: under manual optimization the module steps its schedulers itself
        for cfg in self.trainer.lr_scheduler_configs:
            if cfg.interval == "epoch" and epoch % cfg.frequency == 0:
                self.trainer._step_scheduler(cfg)

    def _on_completed(self, engine: Any) -> None:
        self.dispatch.call("on_train_end")
        self.dispatch.call("on_fit_end")


class _Started:
    """A loader whose iterator for this epoch was already made (see ``_on_epoch_started``)."""

    def __init__(self, data_iter: Iterator, loader: Any) -> None:
        self._iter: Iterator | None = data_iter
        self.loader = loader

    def __iter__(self) -> Iterator:
        data_iter, self._iter = self._iter, None
        return data_iter if data_iter is not None else iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
