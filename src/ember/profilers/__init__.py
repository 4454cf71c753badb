"""Profilers (Lightning's): time the Trainer's hooks and steps and report where the time goes.

``Trainer(profiler="simple")`` (wall time per action, a table), ``"advanced"`` (``cProfile`` per
action), ``"pytorch"`` (``torch.profiler``: operators per action) or a profiler instance; with
``None`` (the default) nothing is timed and nothing is added to a step.
"""

from __future__ import annotations

from typing import Any

from ember.profilers.advanced import AdvancedProfiler
from ember.profilers.base import PassThroughProfiler, Profiler
from ember.profilers.pytorch import PyTorchProfiler
from ember.profilers.simple import SimpleProfiler

_BY_NAME = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}


def resolve_profiler(profiler: Any) -> Profiler:
    """The profiler for ``Trainer(profiler=...)``: None, a name in ``'simple'``, ``'advanced'``,
    ``'pytorch'`` (any case), or a :class:`Profiler`."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in _BY_NAME:
        return _BY_NAME[profiler.lower()]()
    raise ValueError(
        f"profiler={profiler!r} is not valid; use None, one of {sorted(_BY_NAME)}, or an ember.profilers.Profiler"
    )


__all__ = [
    "AdvancedProfiler",
    "PassThroughProfiler",
    "Profiler",
    "PyTorchProfiler",
    "SimpleProfiler",
    "resolve_profiler",
]
