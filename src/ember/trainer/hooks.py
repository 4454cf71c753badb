"""The dispatch table: for each hook, the bound methods that actually override it, in hook order.

Built once per run. A module hook counts when the module's class defines it and it is not
``ember.Module``'s no-op, or when it was assigned on the instance (``model.on_train_epoch_start = f``);
a callback hook likewise against ``Callback``. Order, as in Lightning: on every hook the callbacks
run before the module, except ``on_train_epoch_end``, where the monitoring callbacks
(``ModelCheckpoint``, ``EarlyStopping``) run after the module so that they see what it logged.
Callbacks are ordered by ``priority`` (higher first) and then by their place in the list.

With an active profiler (``Trainer(profiler=...)``) each hook is timed as Lightning names it,
``[Callback]<state_key>.<hook>`` and ``[LightningModule]<class>.<hook>``; without one the lists hold
the hooks themselves (nothing added per call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.engine import priority_order
from ember.module import Module
from ember.profilers.base import active, profiled
from ember.trainer.logging import guard_hook

MONITORS = (ModelCheckpoint, EarlyStopping)


def _hook(obj: Any, name: str, base: type) -> Callable | None:
    """``obj``'s ``name`` if it is assigned on the instance or overrides ``base``'s, else None."""
    assigned = getattr(obj, "__dict__", {}).get(name)
    if callable(assigned):
        return assigned
    return getattr(obj, name) if overrides(obj, name, base) else None


def overrides(obj: Any, name: str, base: type) -> bool:
    """Whether ``obj``'s class provides ``name`` with something other than ``base``'s version."""
    impl = getattr(type(obj), name, None)
    return impl is not None and impl is not getattr(base, name, None)


def _state_key(callback: Any) -> str:
    key = getattr(callback, "state_key", None)
    return key if isinstance(key, str) else type(callback).__name__


class Dispatch:
    """Hook lists for one module and its callbacks; ``calls(name)`` is cached per hook."""

    def __init__(self, trainer: Any, module: Any, callbacks: Sequence[Any]) -> None:
        self.trainer = trainer
        self.module = module
        ordered = sorted(enumerate(callbacks), key=lambda ic: priority_order(getattr(ic[1], "priority", 0), ic[0]))
        self.callbacks = [c for _, c in ordered]
        self._cache: dict[str, tuple[Callable, ...]] = {}
        #: the Trainer's profiler when it records something, else None
        self.profiler = active(getattr(trainer, "profiler", None))

    def action(self, kind: str, name: str) -> str:
        """A profiled action's name, as Lightning's: ``[Strategy]SingleDeviceStrategy.backward``, ..."""
        owner = self.trainer.strategy if kind == "Strategy" else self.module
        return f"[{kind}]{type(owner).__name__}.{name}"

    def module_hook(self, name: str) -> Callable | None:
        return _hook(self.module, name, Module)

    def calls(self, name: str) -> tuple[Callable, ...]:
        """Callables for ``name`` taking the hook's own arguments (trainer and module are bound)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        found = [(c, _hook(c, name, Callback)) for c in self.callbacks]
        cbs = [(c, partial(hook, self.trainer, self.module)) for c, hook in found if hook is not None]
        mod = self.module_hook(name)
        prof = self.profiler
        if prof is not None:
            cbs = [(c, profiled(h, f"[Callback]{_state_key(c)}.{name}", prof)) for c, h in cbs]
            mod = profiled(mod, self.action("LightningModule", name), prof) if mod is not None else None
        mods = (mod,) if mod is not None else ()
        if name == "on_train_epoch_end":  # Lightning: monitors act on what the module logged here
            result = (
                tuple(h for c, h in cbs if not isinstance(c, MONITORS))
                + mods
                + tuple(h for c, h in cbs if isinstance(c, MONITORS))
            )
        else:
            result = tuple(h for _, h in cbs) + mods
        logging = getattr(self.trainer, "_logging", None)
        if logging is not None:  # self.log refuses or logs per epoch in some hooks (Lightning's table)
            result = tuple(guard_hook(logging.ctx, name, fn) for fn in result)
        self._cache[name] = result
        return result

    def call(self, name: str, *args: Any) -> None:
        for fn in self.calls(name):
            fn(*args)
