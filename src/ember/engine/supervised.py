"""Ready-made supervised trainers and evaluators: Ignite's ``create_supervised_trainer``,
``create_supervised_evaluator`` and the ``supervised_*_step`` process functions they are made of.

One training step, as Ignite runs it (``k = gradient_accumulation_steps``)::

    if (iteration - 1) % k == 0: optimizer.zero_grad()
    model.train()
    x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
    y_pred = model_transform(model_fn(model, x))
    loss = loss_fn(y_pred, y) / k                       # under autocast with amp_mode="amp"
    loss.backward()                                     # scaler.scale(loss).backward() with a scaler
    if iteration % k == 0: optimizer.step()             # scaler.step(optimizer); scaler.update()
    return output_transform(x, y, y_pred, loss * k)     # default: loss.item()

One evaluation step: ``model.eval()``, then under ``torch.no_grad()`` the same forward, returning
``output_transform(x, y, y_pred)`` (default ``(y_pred, y)``, what metrics take).

``device`` only moves the batches: move the model yourself before building its optimizer.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ember.engine.engine import Engine

_AMP_MODES = (None, "amp", "apex")


def convert_tensor(x: Any, device: str | torch.device | None = None, non_blocking: bool = False) -> Any:
    """``x`` with every tensor in it (nested in lists, tuples, named tuples and dicts) moved to
    ``device``; ``x`` itself when ``device`` is None."""
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device=device, non_blocking=non_blocking)
    if isinstance(x, (str, bytes)):
        return x
    if isinstance(x, Mapping):
        return type(x)({k: convert_tensor(v, device, non_blocking) for k, v in x.items()})
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a named tuple
        return type(x)(*(convert_tensor(v, device, non_blocking) for v in x))
    if isinstance(x, Sequence):
        return type(x)([convert_tensor(v, device, non_blocking) for v in x])
    raise TypeError(f"a batch must hold tensors, dicts, lists or tuples; found a {type(x).__name__}")


def default_prepare_batch(
    batch: Sequence[Any], device: str | torch.device | None = None, non_blocking: bool = False
) -> tuple:
    """The default ``prepare_batch``: ``batch`` is ``(x, y)``; both moved to ``device``."""
    x, y = batch
    return convert_tensor(x, device, non_blocking), convert_tensor(y, device, non_blocking)


def _identity(output: Any) -> Any:
    return output


def _apply_model(model: torch.nn.Module, x: Any) -> Any:
    return model(x)


def _loss_item(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> float:
    return loss.item()


def _prediction_and_target(x: Any, y: Any, y_pred: Any) -> tuple[Any, Any]:
    return y_pred, y


def _check_accumulation(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"gradient_accumulation_steps must be a positive integer (1: no accumulation), got {steps!r}")


def _training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str | torch.device | None,
    non_blocking: bool,
    prepare_batch: Callable,
    model_transform: Callable[[Any], Any],
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any],
    gradient_accumulation_steps: int,
    model_fn: Callable[[torch.nn.Module, Any], Any],
    autocast: Callable[[], Any] | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    step: Callable[[], None] | None = None,
) -> Callable[[Engine, Any], Any]:
    """The training step of the module doc; ``autocast``/``backward``/``step`` vary it per mode."""
    _check_accumulation(gradient_accumulation_steps)
    k = gradient_accumulation_steps
    do_backward = backward or (lambda loss: loss.backward())
    do_step = step or optimizer.step

    def forward(x: Any, y: Any) -> tuple[Any, torch.Tensor]:
        y_pred = model_transform(model_fn(model, x))
        loss = loss_fn(y_pred, y)
        return y_pred, (loss / k if k > 1 else loss)

    def update(engine: Engine, batch: Any) -> Any:
        if (engine.state.iteration - 1) % k == 0:
            optimizer.zero_grad()
        model.train()
        x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
        if autocast is None:
            y_pred, loss = forward(x, y)
        else:
            with autocast():
                y_pred, loss = forward(x, y)
        do_backward(loss)
        if engine.state.iteration % k == 0:
            do_step()
        return output_transform(x, y, y_pred, loss * k)

    return update


def supervised_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Callable[[Engine, Any], Any]:
    """The process function of one training step (see the module doc): ``Engine(supervised_training_step(...))``."""
    return _training_step(
        model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
        gradient_accumulation_steps, model_fn,
    )  # fmt: skip


def _cuda_autocast() -> Any:
    # Ignite autocasts CUDA ops (whatever `device` is); without CUDA this is a no-op, minus the warning
    return torch.autocast("cuda", enabled=torch.cuda.is_available())


def supervised_training_step_amp(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    scaler: torch.amp.GradScaler | None = None,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Callable[[Engine, Any], Any]:
    """The training step with the forward under CUDA autocast, and with a ``GradScaler`` when given."""
    backward = step = None
    if scaler:

        def backward(loss: torch.Tensor) -> None:
            scaler.scale(loss).backward()

        def step() -> None:
            scaler.step(optimizer)
            scaler.update()

    return _training_step(
        model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
        gradient_accumulation_steps, model_fn, _cuda_autocast, backward, step,
    )  # fmt: skip


def supervised_training_step_apex(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Callable[[Engine, Any], Any]:
    """The training step with NVIDIA apex's loss scaling (``amp_mode="apex"``; needs apex installed)."""
    try:
        from apex import amp as apex_amp
    except ModuleNotFoundError:
        raise ModuleNotFoundError("amp_mode='apex' needs NVIDIA apex: https://github.com/nvidia/apex") from None

    def backward(loss: torch.Tensor) -> None:
        with apex_amp.scale_loss(loss, optimizer) as scaled:
            scaled.backward()

    return _training_step(
        model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
        gradient_accumulation_steps, model_fn, None, backward,
    )  # fmt: skip


def supervised_training_step_tpu(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Callable[[Engine, Any], Any]:
    """The training step on an XLA device: the update through ``xm.optimizer_step`` (needs torch_xla)."""
    try:
        import torch_xla.core.xla_model as xm
    except ModuleNotFoundError:
        raise ModuleNotFoundError("an XLA device needs torch_xla (PyTorch/XLA) installed") from None

    def step() -> None:
        xm.optimizer_step(optimizer, barrier=True)

    return _training_step(
        model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
        gradient_accumulation_steps, model_fn, None, None, step,
    )  # fmt: skip


def _mode(device: str | torch.device | None, amp_mode: str | None, scaler: Any) -> tuple[str | None, Any]:
    """``(mode, scaler)`` for the device, ``amp_mode`` and ``scaler`` arguments (Ignite's rules)."""
    if amp_mode not in _AMP_MODES:
        raise ValueError(f"amp_mode={amp_mode!r}; choose None, 'amp' or 'apex'")
    device_type = device.type if isinstance(device, torch.device) else device
    on_tpu = device_type is not None and "xla" in device_type
    on_mps = device_type is not None and "mps" in device_type
    if on_mps and amp_mode:
        raise ValueError(f"amp_mode={amp_mode!r} cannot be used on an mps device; use amp_mode=None")
    if on_tpu:
        if importlib.util.find_spec("torch_xla") is None:
            raise RuntimeError(f"device={device!r} is an XLA device: it needs torch_xla (PyTorch/XLA) installed")
        if amp_mode:
            raise ValueError(f"amp_mode={amp_mode!r} cannot be used on an xla device; use amp_mode=None")
        return "tpu", None
    if scaler:
        if amp_mode != "amp":
            raise ValueError(f"scaler={scaler!r} needs amp_mode='amp', got amp_mode={amp_mode!r}")
        if isinstance(scaler, bool):
            scaler = torch.amp.GradScaler(enabled=True)
        return "amp", scaler
    return amp_mode, None


def create_supervised_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    deterministic: bool = False,
    amp_mode: str | None = None,
    scaler: bool | torch.amp.GradScaler = False,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Engine:
    """An Engine that trains ``model`` with ``optimizer`` on ``loss_fn`` (the step is in the module doc).

    ``amp_mode="amp"`` runs the forward under CUDA autocast, with a ``GradScaler`` when ``scaler`` is
    one (or ``True``: a new one, stored as ``trainer.state.scaler`` so it can be checkpointed);
    ``"apex"`` uses NVIDIA apex; an ``xla`` device steps through torch_xla. ``deterministic=True``
    returns a ``DeterministicEngine`` (the same data order and random state when resumed).
    ``engine.state.output`` is ``output_transform(x, y, y_pred, loss)``, the loss as a float by default.
    Example::

        trainer = create_supervised_trainer(model, optimizer, F.cross_entropy, device="cuda")
        trainer.run(train_loader, max_epochs=5)
    """
    mode, the_scaler = _mode(device, amp_mode, scaler)
    args = (model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform)
    if mode == "amp":
        update = supervised_training_step_amp(*args, the_scaler, gradient_accumulation_steps, model_fn)
    elif mode == "apex":
        update = supervised_training_step_apex(*args, gradient_accumulation_steps, model_fn)
    elif mode == "tpu":
        update = supervised_training_step_tpu(*args, gradient_accumulation_steps, model_fn)
    else:
        update = supervised_training_step(*args, gradient_accumulation_steps, model_fn)
    if deterministic:
        from ember.engine.deterministic import DeterministicEngine

        trainer: Engine = DeterministicEngine(update)
    else:
        trainer = Engine(update)
    if the_scaler is not None and isinstance(scaler, bool):
        trainer.state.scaler = the_scaler
    return trainer


def supervised_evaluation_step(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any], Any] = _prediction_and_target,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Callable[[Engine, Any], Any]:
    """The process function of one evaluation step (see the module doc)."""
    return _evaluation_step(model, device, non_blocking, prepare_batch, model_transform, output_transform, model_fn)


def supervised_evaluation_step_amp(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any], Any] = _prediction_and_target,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Callable[[Engine, Any], Any]:
    """The evaluation step with the forward under CUDA autocast."""
    return _evaluation_step(
        model, device, non_blocking, prepare_batch, model_transform, output_transform, model_fn, _cuda_autocast
    )


def _evaluation_step(
    model: torch.nn.Module,
    device: str | torch.device | None,
    non_blocking: bool,
    prepare_batch: Callable,
    model_transform: Callable[[Any], Any],
    output_transform: Callable[[Any, Any, Any], Any],
    model_fn: Callable[[torch.nn.Module, Any], Any],
    autocast: Callable[[], Any] | None = None,
) -> Callable[[Engine, Any], Any]:
    def evaluate(engine: Engine, batch: Any) -> Any:
        model.eval()
        with torch.no_grad():
            x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
            if autocast is None:
                y_pred = model_transform(model_fn(model, x))
            else:
                with autocast():
                    y_pred = model_transform(model_fn(model, x))
            return output_transform(x, y, y_pred)

    return evaluate


def create_supervised_evaluator(
    model: torch.nn.Module,
    metrics: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = default_prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any], Any] = _prediction_and_target,
    amp_mode: str | None = None,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _apply_model,
) -> Engine:
    """An Engine that evaluates ``model`` (the step is in the module doc) with ``metrics``
    (``{name: metric}``, each attached under its name). Example::

        evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "nll": Loss(F.cross_entropy)})
        evaluator.run(val_loader)
        evaluator.state.metrics["accuracy"]
    """
    mode, _ = _mode(device, amp_mode, None)
    if metrics is not None and not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> metric, got {type(metrics).__name__}")
    for name, metric in (metrics or {}).items():
        if not callable(getattr(metric, "attach", None)):
            raise TypeError(f"metrics[{name!r}] must be a metric (with attach()), got {type(metric).__name__}")
    make = supervised_evaluation_step_amp if mode == "amp" else supervised_evaluation_step
    evaluator = Engine(make(model, device, non_blocking, prepare_batch, model_transform, output_transform, model_fn))
    for name, metric in (metrics or {}).items():
        metric.attach(evaluator, name)
    return evaluator
