"""An exact snapshot of what a tuning sweep touches, and its restore: a model's parameters,
buffers, gradients and train/eval modes, optimizers and schedulers, and the random number
generators. Copies are kept on the CPU, so a sweep on a GPU does not double its memory."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch

from ember.module import attach_trainer, attached_trainer
from ember.tree import tree_map

_MISSING = object()


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU (bit for bit)."""
    return tree_map(_cpu_copy_leaf, obj)


def _cpu_copy_leaf(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor):
        return leaf.detach().to("cpu", copy=True)
    return copy.deepcopy(leaf)


class _SavedTensor:
    """One parameter or buffer: which module attribute holds it, the object and its values."""

    __slots__ = ("device", "dtype", "grad", "leaf", "obj", "owner", "values")

    def __init__(self, owner: torch.nn.Module, leaf: str, obj: torch.Tensor) -> None:
        self.owner, self.leaf, self.obj = owner, leaf, obj
        self.device, self.dtype = obj.device, obj.dtype
        self.values = obj.detach().to("cpu", copy=True)
        self.grad = None if obj.grad is None else obj.grad.detach().to("cpu", copy=True)

    def restore(self) -> None:
        obj = self.obj
        if getattr(self.owner, self.leaf, None) is not obj:  # the module was given a new tensor: put the original back
            setattr(self.owner, self.leaf, obj)
        with torch.no_grad():
            if obj.device == self.device and obj.dtype == self.dtype and obj.shape == self.values.shape:
                obj.copy_(self.values)
            else:  # moved or cast (e.g. to the sweep's device or precision): the original storage back
                obj.data = self.values.to(self.device)
        obj.grad = None if self.grad is None else self.grad.to(self.device)


class Snapshot:
    """Everything :func:`ember.tune.lr_find` may change; :meth:`restore` puts it all back."""

    def __init__(self, model: torch.nn.Module, trainer: Any = None, datamodule: Any = None) -> None:
        self.model = model
        modules = dict(model.named_modules(remove_duplicate=False))
        self.tensors: list[_SavedTensor] = []
        for kind in ("named_parameters", "named_buffers"):
            for name, tensor in getattr(model, kind)():
                owner, _, leaf = name.rpartition(".")
                self.tensors.append(_SavedTensor(modules[owner], leaf, tensor))
        self.modes = [(m, m.training) for m in model.modules()]
        self.model_trainer = attached_trainer(model)
        self.datamodule = datamodule
        self.datamodule_trainer = getattr(datamodule, "trainer", _MISSING) if datamodule is not None else _MISSING
        self.optimizers: dict[int, tuple[Any, Any]] = {}
        self.schedulers: list[tuple[Any, Any]] = []
        if trainer is not None:
            for opt in trainer.optimizers:
                self.add_optimizer(opt)
            for cfg in trainer.lr_scheduler_configs:
                if callable(getattr(cfg.scheduler, "state_dict", None)):
                    self.schedulers.append((cfg.scheduler, _cpu_copy(cfg.scheduler.state_dict())))
        self.rng = _rng_state()

    def add_optimizer(self, optimizer: Any) -> None:
        """Also restore ``optimizer`` (the first state recorded for it wins)."""
        if id(optimizer) not in self.optimizers:
            self.optimizers[id(optimizer)] = (optimizer, _cpu_copy(optimizer.state_dict()))

    def restore(self) -> None:
        for saved in self.tensors:
            saved.restore()
        for module, training in self.modes:
            module.training = training
        attach_trainer(self.model, self.model_trainer)
        if self.datamodule is not None and self.datamodule_trainer is not _MISSING:
            self.datamodule.trainer = self.datamodule_trainer
        for optimizer, state in self.optimizers.values():
            optimizer.load_state_dict(state)
        for scheduler, state in self.schedulers:
            scheduler.load_state_dict(state)
        _set_rng_state(self.rng)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
