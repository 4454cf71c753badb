"""The manual-optimization helpers of :class:`ember.Module` (Lightning's names and semantics):
``self.optimizers()``, ``self.lr_schedulers()``, ``self.manual_backward()``, ``toggle_optimizer`` /
``untoggle_optimizer`` / ``toggled_optimizer`` and ``self.clip_gradients()``.

``ember.Module`` inherits them from :class:`ManualOptimization`; they reach the trainer only through
``self.trainer`` (a :class:`~ember.context.RunContext`, see docs/architecture.md, *One seam between
modules/callbacks and the trainer*).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ember.runtime.clipping import check_clip_algorithm, clip_gradients, optimizer_parameters


class ManualOptimization:
    """Mixin of :class:`ember.Module`: what ``training_step`` uses to step optimizers itself."""

    trainer: Any

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer (or list of them) from ``configure_optimizers``, for manual optimization. Each is
        an instance of its own optimizer class whose ``step()`` runs the Trainer's step path (hooks,
        precision, ``global_step += 1``); ``use_pl_optimizer=False`` gives the raw optimizers."""
        opts = self.trainer.step_optimizers if use_pl_optimizer else self.trainer.optimizers
        return opts[0] if len(opts) == 1 else opts

    def lr_schedulers(self) -> Any:
        """The scheduler (or list of them) from ``configure_optimizers``; None when there are none."""
        scheds = [c.scheduler for c in self.trainer.lr_scheduler_configs]
        if not scheds:
            return None
        return scheds[0] if len(scheds) == 1 else scheds

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward under manual optimization: the backward hooks and the precision's loss scaling."""
        self.trainer.manual_backward(loss, *args, **kwargs)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Let only ``optimizer``'s parameters take gradients: every other optimizer's parameters get
        ``requires_grad=False`` until :meth:`untoggle_optimizer` restores them (a parameter
        ``optimizer`` also holds keeps its own setting)."""
        saved: dict[torch.Tensor, bool] = {}
        for opt in self.trainer.optimizers:
            for p in optimizer_parameters(opt):
                if p not in saved:
                    saved[p] = p.requires_grad
                    p.requires_grad = False
        for p in optimizer_parameters(optimizer):
            p.requires_grad = saved.get(p, p.requires_grad)
        self.__dict__["_param_requires_grad_state"] = saved

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Restore the ``requires_grad`` flags :meth:`toggle_optimizer` turned off."""
        saved = self.__dict__.pop("_param_requires_grad_state", {})
        raw = getattr(optimizer, "optimizer", optimizer)  # what self.optimizers() returned, or the raw one
        for opt in self.trainer.optimizers:
            if opt is optimizer or opt is raw:
                continue
            for p in optimizer_parameters(opt):
                if p in saved:
                    p.requires_grad = saved[p]

    @contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Iterator[None]:
        """:meth:`toggle_optimizer` for the ``with`` block, :meth:`untoggle_optimizer` after it."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def clip_gradients(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by ``"norm"`` (default) or ``"value"``.

        None takes the Trainer's ``gradient_clip_val`` (no clipping when it has none); a value
        other than the Trainer's is an error, as in Lightning (use one of them)."""
        trainer = self.__dict__.get("_trainer")
        configured = getattr(trainer, "gradient_clip_val", None)
        if gradient_clip_val is None:
            gradient_clip_val = configured or 0.0
        elif configured is not None and configured != gradient_clip_val:
            raise ValueError(
                f"You have set `Trainer(gradient_clip_val={configured!r})` and have passed "
                f"`clip_gradients(gradient_clip_val={gradient_clip_val!r})`. Please use only one of them."
            )
        if isinstance(gradient_clip_val, bool) or not isinstance(gradient_clip_val, (int, float)):
            raise TypeError(f"gradient_clip_val should be an int or a float; got {gradient_clip_val!r}")
        if gradient_clip_algorithm is None:
            gradient_clip_algorithm = getattr(trainer, "gradient_clip_algorithm", None) or "norm"
        algorithm = check_clip_algorithm(str(gradient_clip_algorithm).lower())
        clip_gradients(optimizer_parameters(optimizer), gradient_clip_val, algorithm)
