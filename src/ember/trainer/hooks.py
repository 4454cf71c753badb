"""The dispatch table: for each hook, the bound methods that actually override it, in hook order.

Built once per run. A module hook counts when the module's class defines it and it is not
``ember.Module``'s no-op; a callback hook when it differs from ``Callback``'s. Order: on
``*_start`` hooks (and every hook that is not an ``*_end`` hook) callbacks run before the module;
on ``*_end`` hooks the module runs first, so callbacks see what it logged. Callbacks are ordered by
``priority`` (higher first) and then by their place in the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ember.callbacks.callback import Callback
from ember.engine import priority_order
from ember.module import Module


def overrides(obj: Any, name: str, base: type) -> bool:
    """Whether ``obj``'s class provides ``name`` with something other than ``base``'s version."""
    impl = getattr(type(obj), name, None)
    return impl is not None and impl is not getattr(base, name, None)


class Dispatch:
    """Hook lists for one module and its callbacks; ``calls(name)`` is cached per hook."""

    def __init__(self, trainer: Any, module: Any, callbacks: Sequence[Any]) -> None:
        self.trainer = trainer
        self.module = module
        ordered = sorted(enumerate(callbacks), key=lambda ic: priority_order(getattr(ic[1], "priority", 0), ic[0]))
        self.callbacks = [c for _, c in ordered]
        self._cache: dict[str, tuple[Callable, ...]] = {}

    def module_hook(self, name: str) -> Callable | None:
        return getattr(self.module, name) if overrides(self.module, name, Module) else None

    def calls(self, name: str) -> tuple[Callable, ...]:
        """Callables for ``name`` taking the hook's own arguments (trainer and module are bound)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        cb = tuple(
            partial(getattr(c, name), self.trainer, self.module) for c in self.callbacks if overrides(c, name, Callback)
        )
        mod = self.module_hook(name)
        mods = (mod,) if mod is not None else ()
        result = mods + cb if name.endswith("_end") else cb + mods
        self._cache[name] = result
        return result

    def call(self, name: str, *args: Any) -> None:
        for fn in self.calls(name):
            fn(*args)
