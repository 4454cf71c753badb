"""``CombinedLoader``: several iterables read together, in Lightning's four modes.

Iterating yields ``(batch, batch_idx, dataloader_idx)`` triples:

- ``min_size``: one batch of every iterable per step, until the shortest ends (the default);
- ``max_size_cycle``: until the longest ends, the shorter ones start again when they end;
- ``max_size``: until the longest ends, ``None`` in place of the ended ones;
- ``sequential``: each iterable in turn, whole; ``batch`` is that iterable's batch and
  ``dataloader_idx`` its position.

In the first three modes ``batch`` has the shape of the collection given (a dict of batches for a
dict of loaders) and ``dataloader_idx`` is 0. A Trainer accepts a ``CombinedLoader`` as training,
validation, test or predict data, as Lightning does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from ember.tree import tree_leaves, tree_map

MODES = ("min_size", "max_size_cycle", "max_size", "sequential")
_COMBINE_LENGTHS = {"min_size": min, "max_size_cycle": max, "max_size": max, "sequential": sum}


def _length(iterable: Any) -> float:
    """``len(iterable)``, or infinity when it has none (its ``__len__`` missing or raising)."""
    try:
        return len(iterable)
    except (TypeError, NotImplementedError):
        return math.inf


class CombinedLoader(Iterable):
    """Reads a dict, list or tuple (nested too) of iterables together; see the module docstring.

    Example::

        combined = CombinedLoader({"a": loader_a, "b": loader_b}, "max_size_cycle")
        for batch, batch_idx, dataloader_idx in combined:
            batch["a"], batch["b"]

    ``len()`` works before iterating too (Lightning asks for an ``iter()`` first); an iterable
    without a length counts as endless, and ``len()`` raises ``TypeError`` when that makes the
    total endless. ``limits`` (one number of batches per iterable, set by the Trainer from
    ``limit_*_batches``) caps each iterable's count in ``len()``, and in ``sequential`` mode also
    where each iterable stops.
    """

    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in MODES:
            raise ValueError(f"CombinedLoader mode={mode!r} is not supported; use one of {list(MODES)}")
        self._iterables = iterables
        self._flattened = tree_leaves(iterables)
        self._mode = mode
        self._limits: list[int | float] | None = None

    @property
    def mode(self) -> str:
        """One of ``min_size``, ``max_size_cycle``, ``max_size``, ``sequential``."""
        return self._mode

    @property
    def iterables(self) -> Any:
        """The collection of iterables, as given (with any replaced through ``flattened``)."""
        return self._iterables

    @property
    def flattened(self) -> list[Any]:
        """The iterables as a flat list, in the collection's order."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: list[Any]) -> None:
        if len(flattened) != len(self._flattened):
            raise ValueError(
                f"flattened must hold {len(self._flattened)} iterables (one per original), got {len(flattened)}"
            )
        self._flattened = list(flattened)
        self._iterables = self._unflatten(self._flattened)

    @property
    def sampler(self) -> Any:
        """Each iterable's ``sampler`` (None where it has none), in the collection's shape."""
        return self._unflatten([getattr(x, "sampler", None) for x in self._flattened])

    @property
    def batch_sampler(self) -> Any:
        """Each iterable's ``batch_sampler`` (None where it has none), in the collection's shape."""
        return self._unflatten([getattr(x, "batch_sampler", None) for x in self._flattened])

    @property
    def limits(self) -> list[int | float] | None:
        """Batches allowed per iterable (None: no limit)."""
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list[int | float] | None) -> None:
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self._flattened)
        elif limits is not None and len(limits) != len(self._flattened):
            raise ValueError(f"limits must hold one number per iterable ({len(self._flattened)}), got {len(limits)}")
        self._limits = None if limits is None else list(limits)

    def _unflatten(self, values: list[Any]) -> Any:
        it = iter(values)
        return tree_map(lambda _: next(it), self._iterables)

    def __len__(self) -> int:
        lengths = [_length(x) for x in self._flattened]
        if self._limits is not None:
            lengths = [min(n, limit) for n, limit in zip(lengths, self._limits)]
        total = _COMBINE_LENGTHS[self._mode](lengths) if lengths else 0
        if math.isinf(total):
            raise TypeError(f"this CombinedLoader ({self._mode}) has no length: one of its iterables has none")
        return int(total)

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        if self._mode == "sequential":
            return self._sequential()
        return self._together()

    def _sequential(self) -> Iterator[tuple[Any, int, int]]:
        for idx, iterable in enumerate(self._flattened):
            limit = math.inf if self._limits is None else self._limits[idx]
            if limit <= 0:
                continue
            for batch_idx, batch in enumerate(iterable):
                yield batch, batch_idx, idx
                if batch_idx + 1 >= limit:
                    break

    def _together(self) -> Iterator[tuple[Any, int, int]]:
        n = len(self._flattened)
        if n == 0:
            return
        iterators = [iter(x) for x in self._flattened]
        ended = [False] * n
        mode = self._mode
        batch_idx = 0
        while True:
            out: list[Any] = [None] * n
            for i in range(n):
                if ended[i] and mode == "max_size":
                    continue
                try:
                    out[i] = next(iterators[i])
                except StopIteration:
                    if mode == "min_size":
                        return
                    ended[i] = True
                    if all(ended):
                        return
                    if mode == "max_size_cycle":  # start the ended one again
                        iterators[i] = iter(self._flattened[i])
                        out[i] = next(iterators[i])
            if mode == "max_size" and all(ended):
                return
            yield self._unflatten(out), batch_idx, 0
            batch_idx += 1
