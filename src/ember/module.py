"""``ember.Module``: the convenient base class for models trained by the :class:`ember.Trainer`.

The Trainer only needs the methods it calls (``training_step``, ``configure_optimizers``, ...),
so any ``torch.nn.Module`` that provides them works; this base adds ``self.log``,
``save_hyperparameters``, the no-op hooks, and the default behaviour of the overridable steps.

Hooks listed here are never called unless a subclass overrides them: the Trainer builds its
dispatch lists from the overridden methods once per run. See :mod:`ember.trainer.trainer` for
the map of where each hook fires.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ember.context import RunContext
from ember.hyperparameters import AttributeDict, init_arguments, plain_hyperparameters
from ember.manual_optimization import ManualOptimization
from ember.runtime.precision import apply_to_tensors


def logged_hyperparameters(owner: Any) -> dict[str, Any]:
    """What ``owner`` (a Module or DataModule) saved with ``save_hyperparameters`` for the loggers:
    its ``hparams``, or nothing when it was saved with ``logger=False``."""
    hparams = getattr(owner, "hparams", None)
    if owner is None or not isinstance(hparams, dict) or not getattr(owner, "_log_hyperparams", True):
        return {}
    return dict(hparams)


def attached_trainer(model: Any) -> Any:
    """The trainer (run context) ``model`` is attached to, or None (any ``nn.Module``)."""
    return model.__dict__.get("_trainer")


def attach_trainer(model: Any, trainer: Any) -> None:
    """Attach ``model`` to ``trainer`` (None detaches it). A plain object attribute on any
    ``nn.Module``: ``nn.Module.__setattr__`` is slow and would register nothing useful here."""
    if trainer is None:
        model.__dict__.pop("_trainer", None)
    else:
        object.__setattr__(model, "_trainer", trainer)


class Module(ManualOptimization, nn.Module):
    """Base class for Ember models (Lightning's ``LightningModule`` names and semantics). The manual-optimization
    helpers (``optimizers()``, ``toggle_optimizer``, ``clip_gradients``, ...) come from :mod:`ember.manual_optimization`.

    Example::

        class Classifier(ember.Module):
            def __init__(self, lr: float = 1e-3):
                super().__init__()
                self.save_hyperparameters()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self.net(x), y)
                self.log("train_loss", loss, prog_bar=True)
                return loss

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
    """

    #: Set to False to call ``self.optimizers()``, ``self.manual_backward()`` and ``opt.step()`` yourself.
    automatic_optimization: bool = True
    #: An example input (e.g. ``torch.zeros(1, 1, 8, 8)``) for the model summary and exports.
    example_input_array: Any = None
    _trainer: RunContext | None = None
    _log_hyperparams = True  # save_hyperparameters(logger=False) turns it off
    # What TorchScript leaves alone (its documented class attributes; ember.export merges them along
    # each class's bases, so a subclass's own lists add to these): the properties are not compiled
    # (``trainer`` raises outside a Trainer), and the attributes typed ``Any`` or set only for training
    # are not typed.
    __jit_unused_properties__ = [
        "trainer", "current_epoch", "global_step", "global_rank", "local_rank", "logger", "loggers", "device", "dtype",
        "hparams",
    ]  # fmt: skip
    __jit_ignored_attributes__ = [
        "trainer", "automatic_optimization", "example_input_array", "_trainer", "_hparams", "_log_hyperparams",
    ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hparams = AttributeDict()

    # ----------------------------------------------------------------- trainer context

    @property
    def trainer(self) -> RunContext:
        """The Trainer running this module, as a :class:`~ember.context.RunContext` (raises when it
        is not attached to one)."""
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a Trainer")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: RunContext | None) -> None:
        object.__setattr__(self, "_trainer", trainer)

    @property
    def current_epoch(self) -> int:
        """The Trainer's current epoch, counted from 0 (0 when not attached to a Trainer)."""
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, checkpointed ones included (0 when not attached to a Trainer)."""
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes (0 when not attached to a Trainer)."""
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine (0 when not attached to a Trainer)."""
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def logger(self) -> Any:
        """The Trainer's first logger, or None."""
        loggers = self.loggers
        return loggers[0] if loggers else None

    @property
    def loggers(self) -> list[Any]:
        """The Trainer's loggers ([] when not attached)."""
        return list(self._trainer.loggers) if self._trainer is not None else []

    @property
    def device(self) -> torch.device:
        """The device of the first parameter (or else buffer); the CPU when the module has neither."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the first parameter; torch's default dtype when the module has none."""
        for t in self.parameters():
            return t.dtype
        return torch.get_default_dtype()

    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters stored by :meth:`save_hyperparameters`."""
        if "_hparams" not in self.__dict__:
            object.__setattr__(self, "_hparams", AttributeDict())
        return self._hparams

    def save_hyperparameters(self, *args: Any, ignore: str | list[str] | None = None, logger: bool = True) -> None:
        """Store ``__init__`` arguments (or the given names / a dict) in ``self.hparams`` as plain values.

        Called without arguments from ``__init__``, it reads that call's arguments once (the only
        frame inspection in Ember). Non-plain values (modules, callables) are left out with a warning.
        """
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        if len(args) == 1 and isinstance(args[0], Mapping):
            values = dict(args[0])
        elif len(args) == 1 and not isinstance(args[0], str) and hasattr(args[0], "__dict__"):
            values = dict(vars(args[0]))  # an argparse.Namespace (or another plain object)
        else:
            values = init_arguments(self, inspect.currentframe())
            if args:
                unknown = [a for a in args if not isinstance(a, str) or a not in values]
                if unknown:
                    raise ValueError(
                        f"save_hyperparameters(): {unknown} are not arguments of __init__ ({sorted(values)})"
                    )
                values = {name: values[name] for name in args}
        values = {k: v for k, v in values.items() if k not in ignored}
        self.hparams.update(plain_hyperparameters(values, type(self).__name__))
        object.__setattr__(self, "_log_hyperparams", logger)

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: Any, map_location: Any = None, strict: bool = True, **hparam_overrides: Any
    ) -> Any:
        """Rebuild this class from a checkpoint: saved hyperparameters (overridden by
        ``hparam_overrides``; pass again what was not plain, e.g. a submodule) and weights, without
        a random initialisation first. Loads with ``weights_only=True``::

            model = MyModel.load_from_checkpoint("epoch=4-step=500.ckpt", map_location="cpu")
        """
        from ember.checkpoint.loading import load_module_from_checkpoint

        return load_module_from_checkpoint(cls, checkpoint_path, map_location, strict, **hparam_overrides)

    # ----------------------------------------------------------------- logging

    def log(
        self, name: str, value: Any, prog_bar: bool = False, logger: bool | None = None, on_step: bool | None = None,
        on_epoch: bool | None = None, reduce_fx: Any = "mean", enable_graph: bool = False, sync_dist: bool = False,
        sync_dist_group: Any = None, add_dataloader_idx: bool = True, batch_size: int | None = None,
        metric_attribute: str | None = None, rank_zero_only: bool = False,
    ) -> None:  # fmt: skip
        """Record a scalar (number, one-element tensor or torchmetrics ``Metric``) under ``name``; Lightning's signature.

        ``on_step``/``on_epoch`` default by hook, as in Lightning: steps and batch hooks of training log per step,
        evaluation and epoch hooks per epoch (setup, on_fit_start, on_*_end, ... refuse). Epoch values are reduced with
        ``reduce_fx`` ('mean' weighted by ``batch_size``, inferred from the batch). Nothing moves to the host here;
        ``enable_graph`` and ``metric_attribute`` are accepted for Lightning code (stored values never hold a graph).
        """
        trainer = self._trainer
        if trainer is None:
            warnings.warn(f"self.log({name!r}) ignored: {type(self).__name__} is not attached to a Trainer", stacklevel=2)
            return
        trainer.log_value(
            name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist, batch_size, add_dataloader_idx,
            enable_graph, sync_dist_group, rank_zero_only,
        )  # fmt: skip

    def log_dict(
        self, dictionary: Mapping[str, Any], prog_bar: bool = False, logger: bool | None = None,
        on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean", enable_graph: bool = False,
        sync_dist: bool = False, sync_dist_group: Any = None, add_dataloader_idx: bool = True,
        batch_size: int | None = None, rank_zero_only: bool = False,
    ) -> None:  # fmt: skip
        """:meth:`log` every item of ``dictionary`` (a dict or a torchmetrics ``MetricCollection``)."""
        for name, value in dictionary.items():
            self.log(
                name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, sync_dist_group,
                add_dataloader_idx, batch_size, None, rank_zero_only,
            )  # fmt: skip

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` only on the process of global rank zero."""
        if self._trainer is None or self._trainer.is_global_zero:
            print(*args, **kwargs)

    # ----------------------------------------------------------------- steps

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the loss for ``(batch, batch_idx)``. Return it, a dict with it under ``"loss"`` (other keys reach
        ``on_train_batch_end``), or None to skip its backward (the window's step still runs and counts). Under mixed
        precision, autocast; with ``automatic_optimization = False``, step ``self.optimizers()`` here yourself."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(batch, batch_idx) to be fit")

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate ``(batch, batch_idx)`` (and ``dataloader_idx`` with several loaders) in eval mode, without
        gradients; ``self.log`` metrics here. The return value reaches ``on_validation_batch_end``."""
        raise NotImplementedError(f"{type(self).__name__} must implement validation_step(batch, batch_idx) to validate")

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`validation_step`, for ``trainer.test()``; its return value reaches ``on_test_batch_end``."""
        raise NotImplementedError(f"{type(self).__name__} must implement test_step(batch, batch_idx) to test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Default: ``self(batch)``, or ``self(x)`` for an ``(x, y)`` batch."""
        if isinstance(batch, (list, tuple)) and len(batch) == 2:
            batch = batch[0]
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Optimizers and schedulers for ``fit`` (called after ``setup``): ``opt``, ``[opt, ...]``, ``(opts, scheds)``,
        ``{"optimizer": opt, "lr_scheduler": sched | {"scheduler": sched, "interval": "step", ...}}`` (with a
        ``"monitor"`` for ReduceLROnPlateau), a list of such dicts, or None. See "Optimizers and schedulers"."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement configure_optimizers() returning an optimizer, a list of them, "
            "(optimizers, schedulers), or a dict with 'optimizer' and 'lr_scheduler'"
        )

    def configure_callbacks(self) -> Any:
        """Callbacks this model always needs; they are added to (and replace same-type) Trainer callbacks."""
        return []

    # ----------------------------------------------------------------- optimization

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Run backward on ``loss`` (already scaled under 16-mixed); called by the step and ``manual_backward``."""
        loss.backward(*args, **kwargs)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step ``optimizer``; an override must run ``optimizer_closure`` (training_step, zero_grad, backward)."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        """Zero ``optimizer``'s gradients on the first micro-batch of each accumulation window."""
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step ``scheduler`` at its interval, with ``metric`` (ReduceLROnPlateau's monitored value) unless None."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip after ``on_before_optimizer_step`` (unscaled under 16-mixed), with the Trainer's clipping arguments."""
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ----------------------------------------------------------------- data hooks

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move every tensor of the batch to ``device`` (non-blocking from pinned memory)."""
        return apply_to_tensors(batch, lambda t: t.to(device, non_blocking=True))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Return the batch to move to the device (change it here, before ``transfer_batch_to_device``)."""
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Return the batch the step receives (change it here, on the device, e.g. GPU augmentations)."""
        return batch

    # ----------------------------------------------------------------- export

    def to_torchscript(
        self, file_path: Any = None, method: str = "script", example_inputs: Any = None, **kwargs: Any
    ) -> Any:
        """TorchScript (``method="script"`` or ``"trace"``), saved when ``file_path`` (path or binary
        file object) is given. Deprecated upstream: prefer :meth:`to_exported_program`.
        See :func:`ember.export.to_torchscript`."""
        from ember.export import to_torchscript

        return to_torchscript(self, file_path, method, example_inputs, **kwargs)

    def to_onnx(self, file_path: Any, input_sample: Any = None, **kwargs: Any) -> Any:
        """ONNX (one file, dynamic batch axis) to a path or binary file object; ``input_sample``
        defaults to ``example_input_array``. See :func:`ember.export.to_onnx`."""
        from ember.export import to_onnx

        return to_onnx(self, file_path, input_sample, **kwargs)

    def to_exported_program(self, file_path: Any = None, input_sample: Any = None, **kwargs: Any) -> Any:
        """A ``torch.export`` program (dynamic batch axis), saved as ``.pt2`` when ``file_path`` is
        given: the recommended export format. See :func:`ember.export.to_exported_program`."""
        from ember.export import to_exported_program

        return to_exported_program(self, file_path, input_sample, **kwargs)

    # ----------------------------------------------------------------- utilities

    def freeze(self) -> None:
        """Stop gradients for every parameter and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        """Let every parameter take gradients again and switch to train mode."""
        for p in self.parameters():
            p.requires_grad = True
        self.train()

    def named_hooks(self) -> Iterator[str]:
        """Names of the hooks this class overrides (what the Trainer will call)."""
        return (name for name in HOOK_NAMES if getattr(type(self), name, None) is not getattr(Module, name, None))

    # ----------------------------------------------------------------- no-op hooks

    def on_fit_start(self) -> None:
        """First hook of ``fit``'s run (optimizers built, a checkpoint restored), before the sanity check."""
    def on_fit_end(self) -> None:
        """Last hook of a ``fit`` that completed, after ``on_train_end``; ``teardown`` follows."""
    def on_train_start(self) -> None:
        """Training begins: after ``on_fit_start`` and the sanity check, before the first epoch."""
    def on_train_end(self) -> None:
        """Training completed or was stopped: after the last ``on_train_epoch_end``, before ``on_fit_end``."""
    def on_train_epoch_start(self) -> None:
        """At the start of every training epoch (``self.current_epoch`` counts from 0)."""
    def on_train_epoch_end(self) -> None:
        """End of every training epoch, after its validation; ModelCheckpoint/EarlyStopping see what is logged here."""
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
        """Before ``training_step``, the batch on the device. Return -1 to skip the rest of the epoch."""
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After each batch (step done, grads kept); ``outputs``: ``{"loss": loss.detach(), ...}`` (``{}``: skipped)."""
    def on_validation_start(self) -> None:
        """Start of every validation run (in ``fit``, its sanity check, ``validate()``), in eval mode."""
    def on_validation_end(self) -> None:
        """End of every validation run, after ``on_validation_epoch_end`` and its logging."""
    def on_validation_epoch_start(self) -> None:
        """After ``on_validation_start``, before the first batch of the validation loaders."""
    def on_validation_epoch_end(self) -> None:
        """After the last validation batch; values logged here go out with the epoch's."""
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Before ``validation_step`` (``dataloader_idx`` is passed only with several loaders)."""
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """After ``validation_step``; ``outputs`` is what it returned."""
    def on_test_start(self) -> None:
        """Start of ``test()``'s run, in eval mode."""
    def on_test_end(self) -> None:
        """End of ``test()``'s run, after ``on_test_epoch_end`` and its logging."""
    def on_test_epoch_start(self) -> None:
        """After ``on_test_start``, before the first batch of the test loaders."""
    def on_test_epoch_end(self) -> None:
        """After the last test batch; values logged here go out with the epoch's."""
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Before ``test_step`` (``dataloader_idx`` is passed only with several loaders)."""
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """After ``test_step``; ``outputs`` is what it returned."""
    def on_predict_start(self) -> None:
        """Start of ``predict()``'s run, in eval mode."""
    def on_predict_end(self) -> None:
        """End of ``predict()``'s run, after ``on_predict_epoch_end``."""
    def on_predict_epoch_start(self) -> None:
        """After ``on_predict_start``, before the first batch of the predict loaders."""
    def on_predict_epoch_end(self) -> None:
        """After the last predict batch, before ``on_predict_end``."""
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Before ``predict_step`` (``dataloader_idx`` is passed only with several loaders)."""
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """After ``predict_step``; ``outputs`` is the prediction it returned."""
    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Before each backward (automatic, ``manual_backward``); ``loss`` is divided by accumulate_grad_batches."""
    def on_after_backward(self) -> None:
        """After each backward, gradients in ``.grad``; before ``on_before_optimizer_step``."""
    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Gradients complete, before clipping and the update: inspect them here."""
    def on_before_zero_grad(self, optimizer: Any) -> None:
        """Before the gradients are zeroed (the first micro-batch of each accumulation window)."""
    def on_exception(self, exception: BaseException) -> None:
        """When a stage's loop raises ``exception``, before it propagates; callbacks' hooks first."""
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add plain values or tensors to ``checkpoint``, about to be written (after the callbacks')."""
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read ``checkpoint`` (any stage with ``ckpt_path``), right after the weights were restored."""
    def setup(self, stage: str) -> None:
        """At the start of every stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``), after the callbacks'."""
    def teardown(self, stage: str) -> None:
        """At the end of every stage, also after an error; after the callbacks' ``teardown``."""
    def configure_model(self) -> None:
        """Build layers here to create them on the target device (or sharded); called after ``setup``."""

    def on_validation_model_eval(self) -> None:
        """Called as validation starts: puts the module in eval mode (override to keep parts training)."""
        self.eval()

    def on_validation_model_train(self) -> None:
        """Called as validation ends. Not overridden, every submodule's own mode from before is restored."""
        self.train()

    def on_test_model_eval(self) -> None:
        """Called as testing starts: puts the module in eval mode."""
        self.eval()

    def on_test_model_train(self) -> None:
        """Called as testing ends. Not overridden, every submodule's own mode from before is restored."""
        self.train()

    def on_predict_model_eval(self) -> None:
        """Called as prediction starts: puts the module in eval mode."""
        self.eval()


HOOK_NAMES = tuple(name for name in vars(Module) if name.startswith("on_") or name in ("setup", "teardown"))
