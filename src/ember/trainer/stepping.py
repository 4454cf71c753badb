"""The optimizer step, written once: automatic optimization, manual optimization and an overridden
``optimizer_step`` all go through :meth:`Stepper.step`.

Automatic optimization runs Lightning's way. For each batch the process function hands a
:class:`TrainingClosure` to the step::

    optimizer.step(closure)                  (or module.optimizer_step(epoch, batch_idx, optimizer, closure))
      closure():  training_step -> [first micro-batch of an accumulation window: on_before_zero_grad,
                  optimizer_zero_grad] -> on_before_backward, backward, on_after_backward
      then:       [16-mixed: GradScaler.unscale_] on_before_optimizer_step, gradient clipping
      then:       the optimizer's update (GradScaler.step under 16-mixed); global_step += 1

so closure optimizers such as LBFGS work, an overridden ``optimizer_step`` receives a real closure,
and gradients are still populated in ``on_train_batch_end``. Micro-batches that do not end an
accumulation window run the closure alone. A ``training_step`` returning None skips its backward
(as in Lightning, the zero_grad of a window's first micro-batch still runs, and so does the step that
ends a window: it applies the gradients accumulated so far, or none, and is counted; under 16-mixed
the scaler does not step).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ember.module import Module
from ember.profilers.base import profiled
from ember.runtime.clipping import clip_gradients, optimizer_parameters
from ember.trainer.hooks import Dispatch, overrides
from ember.trainer.optimization import LRSchedulerConfig
from ember.trainer.progress import FitProgress

NOT_RUN = object()
NO_METRICS: Mapping[str, Any] = {}  # what schedulers other than ReduceLROnPlateau are stepped with


class Stepper:
    """Backward, zero_grad and optimizer steps for one ``fit``: hooks, precision scaling, clipping
    and counting in one place."""

    def __init__(
        self,
        progress: FitProgress,
        dispatch: Dispatch,
        module: Any,
        scaler: Any,
        clip_val: float | None = None,
        clip_algorithm: str = "norm",
        optimizers: list[Any] | None = None,
    ) -> None:
        self.progress = progress
        self.module = module
        self.scaler = scaler
        self.before_backward = dispatch.calls("on_before_backward")
        self.after_backward = dispatch.calls("on_after_backward")
        self.before_step = dispatch.calls("on_before_optimizer_step")
        self.before_zero = dispatch.calls("on_before_zero_grad")
        self.custom_backward = module.backward if overrides(module, "backward", Module) else None
        custom_clip = overrides(module, "configure_gradient_clipping", Module)
        self.clip_val, self.clip_algorithm = clip_val, clip_algorithm
        self.clip_params = {id(o): optimizer_parameters(o) for o in optimizers or ()}
        self.clips = bool(clip_val) or custom_clip
        self.custom_clip = custom_clip
        #: the active profiler or None; with one, backward is timed (Lightning's action names)
        self.profiler = dispatch.profiler
        self.action = dispatch.action
        if self.profiler is not None:
            self.backward = profiled(self.backward, self.action("Strategy", "backward"), self.profiler)  # type: ignore[method-assign]
            if getattr(module, "automatic_optimization", True) is False:  # opt.step() in training_step
                self.step = profiled(self.step, "optimizer_step", self.profiler)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ the pieces of a step

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward with the hooks around it and the precision's loss scaling (automatic and manual)."""
        for hook in self.before_backward:
            hook(loss)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        if self.custom_backward is not None:
            self.custom_backward(loss, *args, **kwargs)
        else:
            loss.backward(*args, **kwargs)
        for hook in self.after_backward:
            hook()

    def zero_grad(self, optimizer: Any, set_to_none: bool = True) -> None:
        for hook in self.before_zero:
            hook(optimizer)
        optimizer.zero_grad(set_to_none=set_to_none)

    def _before_update(self, optimizer: Any) -> None:
        """Between the gradients and the update: ``on_before_optimizer_step``, then clipping."""
        for hook in self.before_step:
            hook(optimizer)
        if self.clips:
            if self.custom_clip:
                self.module.configure_gradient_clipping(optimizer, self.clip_val, self.clip_algorithm)
            else:
                params = self.clip_params.get(id(optimizer))
                clip_gradients(
                    params if params is not None else optimizer_parameters(optimizer),
                    self.clip_val,
                    self.clip_algorithm,
                )

    # ------------------------------------------------------------------ the one step path

    def step(self, optimizer: Any, closure: Any = None, **kwargs: Any) -> Any:
        """Step ``optimizer`` (the raw one), running ``closure`` first when given; counts the step."""
        scaler = self.scaler
        if scaler is not None:
            # the scaler needs the gradients before it steps: run the closure first (as Lightning does)
            result = closure() if closure is not None else None
            # automatic optimization whose training_step returned None: hooks, no update (as Lightning)
            skipped = result is None and isinstance(closure, TrainingClosure)
            if not skipped:  # the hook and clipping see the true gradients (scaler.step won't unscale again)
                scaler.unscale_(optimizer)
            self._before_update(optimizer)
            if skipped:
                out = None
            else:
                out = scaler.step(optimizer, **kwargs)
                scaler.update()
        elif closure is None:
            self._before_update(optimizer)
            out = optimizer.step(**kwargs)
        else:
            if self.before_step or self.clips:
                closure = _UpdateAfterClosure(self, optimizer, closure)
            out = optimizer.step(closure=closure, **kwargs)
        self.progress.global_step += 1
        return out


class _UpdateAfterClosure:
    """A closure that runs the hooks and clipping once its gradients exist, before the update."""

    __slots__ = ("closure", "optimizer", "stepper")

    def __init__(self, stepper: Stepper, optimizer: Any, closure: Any) -> None:
        self.stepper, self.optimizer, self.closure = stepper, optimizer, closure

    def __call__(self) -> Any:
        result = self.closure()
        self.stepper._before_update(self.optimizer)
        return result


class TrainingClosure:
    """``training_step`` -> zero_grad (first micro-batch of a window) -> backward, for one batch.

    Made once per ``fit``; the process function sets ``batch``/``batch_idx``/``output`` before each
    step. Returns the loss (detached, divided by ``accumulate_grad_batches``), as closure optimizers
    expect, and leaves ``output`` as ``on_train_batch_end`` receives it (Lightning's outputs). Without hooks, loss scaling or overridden ``backward``/``optimizer_zero_grad`` it calls
    ``optimizer.zero_grad``/``loss.backward`` itself: that is what :meth:`Stepper.zero_grad` and
    :meth:`Stepper.backward` reduce to, without the extra call per step.
    """

    __slots__ = (
        "accumulate", "batch", "batch_idx", "custom_zero_grad", "optimizer", "output", "plain_backward",
        "plain_zero_grad", "progress", "stepper", "training_step",
    )  # fmt: skip

    def __init__(
        self, stepper: Stepper, training_step: Any, optimizer: Any, accumulate: int, custom_zero_grad: Any
    ) -> None:
        self.stepper = stepper
        self.progress = stepper.progress
        self.training_step = training_step
        self.optimizer = optimizer
        self.accumulate = accumulate
        self.custom_zero_grad = custom_zero_grad  # the module's optimizer_zero_grad(batch_idx), or None
        self.plain_zero_grad = custom_zero_grad is None and not stepper.before_zero
        self.plain_backward = (
            stepper.custom_backward is None
            and stepper.scaler is None
            and not (stepper.before_backward or stepper.after_backward)
            and stepper.profiler is None
        )
        self.batch: Any = None
        self.batch_idx = 0
        self.output: Any = NOT_RUN

    def __call__(self) -> torch.Tensor | None:
        out = self.training_step(self.batch, self.batch_idx)
        extra = None
        if type(out) is torch.Tensor:
            loss = out
        elif out is None:
            loss = None
        elif isinstance(out, Mapping):
            extra = out
            loss = out.get("loss")
            if not isinstance(loss, torch.Tensor):
                raise ValueError(f"training_step returned a dict without a tensor under 'loss' (keys: {sorted(out)})")
        elif isinstance(out, torch.Tensor):
            loss = out
        else:
            raise TypeError(
                f"training_step must return a loss tensor, a dict with 'loss', or None; got {type(out).__name__}"
            )
        if self.accumulate != 1 and loss is not None:
            loss = loss / self.accumulate
        if self.progress.micro == 0:  # the first micro-batch of an accumulation window
            if self.plain_zero_grad:
                self.optimizer.zero_grad(set_to_none=True)
            elif self.custom_zero_grad is not None:
                self.custom_zero_grad(self.batch_idx)
            else:
                self.stepper.zero_grad(self.optimizer)
        if loss is None:  # skipped: no backward; what on_train_batch_end receives, as in Lightning
            self.output = {}
            return None
        if self.plain_backward:
            loss.backward()
        else:
            self.stepper.backward(loss)
        detached = loss.detach()
        # on_train_batch_end's outputs, as in Lightning: the (accumulation-normalised) loss, detached,
        # and the other keys a training_step dict returned
        self.output = {"loss": detached} if extra is None else {**extra, "loss": detached}
        return detached

    def ran(self) -> bool:
        return self.output is not NOT_RUN


class AutomaticOptimization:
    """The process function of automatic optimization (see the module docstring) for one ``fit``.

    ``process(engine, batch)`` runs the closure for micro-batches inside an accumulation window and
    the optimizer step for the batch that ends one; ``step_leftover(batch_idx)`` steps gradients
    left over at the end of an epoch of unknown length. When nothing runs between the gradients and
    the update (no ``on_before_optimizer_step``, clipping, scaler or overridden ``optimizer_step``),
    :meth:`Stepper.step` reduces to ``optimizer.step(closure)`` and a count, and the process does
    exactly that, without the extra call per step.
    """

    def __init__(
        self,
        stepper: Stepper,
        module: Any,
        training_step: Any,
        optimizer: Any,
        module_optimizer: Any,
        accumulate: int,
        no_sync: Any,
        schedulers: list[LRSchedulerConfig],
        metrics: Any,
    ) -> None:
        self.stepper, self.module, self.optimizer = stepper, module, optimizer
        self.module_optimizer = module_optimizer  # what an overridden optimizer_step receives
        self.accumulate = accumulate
        self.no_sync = no_sync  # DDP: the context that skips the gradient all-reduce, or None
        # Lightning's places: "step" schedulers after each batch that stepped (every `frequency` batches of
        # the epoch), "epoch" ones after the epoch's last batch, before its validation and
        # on_train_epoch_end; ReduceLROnPlateau ones after the metrics they watch (step_plateau_schedulers,
        # and the fit loop after on_train_epoch_end)
        self.step_schedulers = [c for c in schedulers if c.interval == "step" and not c.reduce_on_plateau]
        self.epoch_schedulers = [c for c in schedulers if c.interval == "epoch" and not c.reduce_on_plateau]
        self.plateau_step_schedulers = [c for c in schedulers if c.interval == "step" and c.reduce_on_plateau]
        self.stepped_epoch = -1  # the epoch whose "epoch" schedulers have stepped
        self.metrics = metrics  # () -> callback_metrics, for ReduceLROnPlateau
        self.custom_step = overrides(module, "optimizer_step", Module)
        self.custom_zero_grad = overrides(module, "optimizer_zero_grad", Module)
        prof = stepper.profiler
        if prof is not None:  # time the step and the update as Lightning names them; else nothing is wrapped
            training_step = profiled(training_step, stepper.action("Strategy", "training_step"), prof)
            name = stepper.action("LightningModule", "optimizer_step")
            self._optimizer_step = profiled(self._optimizer_step, name, prof)  # type: ignore[method-assign]
        self.closure = TrainingClosure(
            stepper, training_step, optimizer, accumulate, self._module_zero_grad if self.custom_zero_grad else None
        )
        self.plain_update = not (
            self.custom_step or stepper.before_step or stepper.clips or stepper.scaler is not None or prof is not None
        )

    def process(self, engine: Any, batch: Any) -> Any:
        state = engine.state
        progress, closure = self.stepper.progress, self.closure
        batch_idx = state.epoch_iteration - 1
        closure.batch, closure.batch_idx, closure.output = batch, batch_idx, NOT_RUN
        if progress.micro + 1 < self.accumulate and batch_idx + 1 != state.epoch_length:
            self._accumulate()
        elif self.plain_update:
            self.optimizer.step(closure)
            progress.global_step += 1
            progress.micro = 0
            for cfg in self.step_schedulers:
                if (batch_idx + 1) % cfg.frequency == 0:
                    step_scheduler(cfg, self.module, NO_METRICS)
        else:
            self._optimizer_step(batch_idx, closure)
        if self.epoch_schedulers and batch_idx + 1 == state.epoch_length:
            self.step_epoch_schedulers()
        return closure.output

    def step_epoch_schedulers(self) -> None:
        """Step the "epoch" schedulers (not ReduceLROnPlateau) once per epoch, after its last training
        batch (the fit loop calls it at the epoch's end when the length of the epoch was not known)."""
        epoch = self.stepper.progress.current_epoch
        if self.stepped_epoch == epoch:
            return
        self.stepped_epoch = epoch
        for cfg in self.epoch_schedulers:
            if (epoch + 1) % cfg.frequency == 0:
                step_scheduler(cfg, self.module, NO_METRICS)

    def after_batch(self, engine: Any) -> None:
        """ITERATION_COMPLETED, after the fit loop's handler: the "step" ReduceLROnPlateau schedulers, after
        a validation this batch ran; the epoch's last batch validates at the epoch's end, which steps them."""
        state = engine.state
        if state.epoch_iteration != state.epoch_length:
            self.step_plateau_schedulers(state.epoch_iteration - 1)

    def step_plateau_schedulers(self, batch_idx: int) -> None:
        """Step the "step" ReduceLROnPlateau schedulers after a batch that stepped the optimizer, once
        its validation (if any) has run: the fit loop calls it after each batch when there are any."""
        if self.stepper.progress.micro:
            return
        for cfg in self.plateau_step_schedulers:
            if (batch_idx + 1) % cfg.frequency == 0:
                step_scheduler(cfg, self.module, self.metrics())

    def step_leftover(self, batch_idx: int) -> None:
        self._optimizer_step(batch_idx, _gradients_ready)

    def _accumulate(self) -> None:
        if self.no_sync is None:
            self.closure()
        else:
            with self.no_sync():
                self.closure()
        self.stepper.progress.micro += 1  # a skipped micro-batch counts too: windows are Lightning's

    def _optimizer_step(self, batch_idx: int, step_closure: Any) -> None:
        progress, closure, module = self.stepper.progress, self.closure, self.module
        if self.custom_step:
            module.optimizer_step(progress.current_epoch, batch_idx, self.module_optimizer, step_closure)
            if step_closure is closure and not closure.ran():
                raise RuntimeError(
                    f"{type(module).__name__}.optimizer_step() did not run optimizer_closure: call "
                    "optimizer.step(closure=optimizer_closure), or optimizer_closure() to skip the update"
                )
        else:
            self.stepper.step(self.optimizer, step_closure)
        progress.micro = 0
        for cfg in self.step_schedulers:
            if (batch_idx + 1) % cfg.frequency == 0:
                step_scheduler(cfg, module, NO_METRICS)

    def _module_zero_grad(self, batch_idx: int) -> None:
        for hook in self.stepper.before_zero:
            hook(self.optimizer)
        self.module.optimizer_zero_grad(self.stepper.progress.current_epoch, batch_idx, self.optimizer)


def _gradients_ready() -> None:
    """The closure of an optimizer step whose gradients were accumulated already (epoch-end leftovers)."""
    return None


def manual_outputs(out: Any) -> dict[str, Any]:
    """What ``on_train_batch_end`` receives under manual optimization (as Lightning): the
    ``training_step`` dict (or ``{"loss": tensor}``) with the loss detached; ``{}`` for None."""
    if out is None:
        return {}
    extra = dict(out) if isinstance(out, Mapping) else {"loss": out}
    if isinstance(extra.get("loss"), torch.Tensor):
        extra["loss"] = extra["loss"].detach()
    return extra


class NoOptimizer:
    """Stands in when ``configure_optimizers`` returned None: steps run the closure and count."""

    param_groups: list = []

    @staticmethod
    def step(closure: Any = None) -> Any:
        return closure() if closure is not None else None

    @staticmethod
    def zero_grad(set_to_none: bool = True) -> None:
        return None


class StepOptimizer:
    """An optimizer as the module sees it (``self.optimizers()``, an overridden ``optimizer_step``):
    ``step()`` goes through the Trainer's step path (hooks, scaler, counting); everything else is
    the optimizer's own. As Lightning's ``LightningOptimizer``, it is an instance of the optimizer's
    class (``isinstance(opt, torch.optim.Adam)`` holds): ``StepOptimizer(adam)`` makes a
    ``StepAdam``, whose other methods run on the wrapped optimizer."""

    def __new__(cls, optimizer: Any = None, stepper: Stepper | None = None) -> Any:
        if cls is StepOptimizer and optimizer is not None:
            cls = _step_class(type(optimizer))
        return object.__new__(cls)

    def __init__(self, optimizer: Any, stepper: Stepper | None = None) -> None:
        self.optimizer = optimizer
        self.stepper = stepper

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        if self.stepper is None:
            raise RuntimeError("this optimizer steps only while trainer.fit() runs")
        return self.stepper.step(self.optimizer, closure, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        # the optimizer's own: as in Lightning, on_before_zero_grad belongs to automatic optimization's
        # closure, not to a zero_grad the module calls itself
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"StepOptimizer({self.optimizer!r})"


_STEP_CLASSES: dict[type, type] = {}


def _forward(name: str) -> Any:
    def method(self: StepOptimizer, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.optimizer, name)(*args, **kwargs)

    method.__name__ = name
    return method


def _step_class(optimizer_class: type) -> type:
    """``StepOptimizer`` and ``optimizer_class`` in one class (made once per optimizer class), whose
    methods and properties other than ``StepOptimizer``'s run on the wrapped optimizer."""
    made = _STEP_CLASSES.get(optimizer_class)
    if made is not None:
        return made
    namespace: dict[str, Any] = {"__module__": __name__}
    for name in dir(optimizer_class):
        if name in vars(StepOptimizer):
            continue
        attr = getattr(optimizer_class, name, None)
        if isinstance(attr, property):
            namespace[name] = property(lambda self, n=name: getattr(self.optimizer, n))
        elif callable(attr) and not name.startswith("__"):
            namespace[name] = _forward(name)
    try:
        made = type(f"Step{optimizer_class.__name__}", (StepOptimizer, optimizer_class), namespace)
    except TypeError:  # a class that cannot be a base (final, or a layout conflict): the plain wrapper
        made = type("StepOptimizer", (StepOptimizer,), {})
    return _STEP_CLASSES.setdefault(optimizer_class, made)


def step_scheduler(cfg: LRSchedulerConfig, module: Any, metrics: Mapping[str, Any]) -> None:
    """Step one scheduler: with its monitored value for ReduceLROnPlateau, through an overridden
    ``lr_scheduler_step`` when the module has one."""
    metric = None
    if cfg.reduce_on_plateau:
        if cfg.monitor not in metrics:
            if cfg.strict:
                raise ValueError(
                    f"ReduceLROnPlateau conditioned on metric {cfg.monitor!r} which is not available. Available "
                    f"metrics are: {sorted(metrics)}. Log it before the scheduler steps, or set 'strict': False "
                    "in the lr_scheduler dict to skip the step (with a warning) while it is missing"
                )
            warnings.warn(
                f"ReduceLROnPlateau conditioned on metric {cfg.monitor!r} which is not available but strict is set "
                "to `False`. Skipping learning rate update.",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        metric = metrics[cfg.monitor]
    if overrides(module, "lr_scheduler_step", Module):
        module.lr_scheduler_step(cfg.scheduler, metric)
    elif metric is None:
        cfg.scheduler.step()
    else:
        cfg.scheduler.step(metric)
