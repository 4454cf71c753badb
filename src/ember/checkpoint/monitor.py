"""Watching a metric: the one "did it improve?" test behind early stopping and best-k checkpointing.

``mode="min"`` means lower is better, ``mode="max"`` higher. Used by the Trainer's ``EarlyStopping``
and ``ModelCheckpoint`` callbacks, the Engine's ``EarlyStopping`` handler and :class:`~ember.checkpoint.topk.TopK`.
"""

from __future__ import annotations

MODES = ("min", "max")


def check_mode(mode: str) -> str:
    """``mode``, or a ``ValueError`` naming it when it is neither ``"min"`` nor ``"max"``."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose 'min' or 'max'")
    return mode


def improves(current: float, best: float, mode: str, min_delta: float = 0.0, relative: bool = False) -> bool:
    """Whether ``current`` beats ``best`` by more than ``min_delta`` in the direction of ``mode``.

    ``min_delta`` is absolute, or a fraction of ``abs(best)`` with ``relative=True``. A NaN on
    either side never improves (every comparison with NaN is false).

    Example::

        improves(0.9, 1.0, "min", min_delta=0.05)  # True: 0.9 < 1.0 - 0.05
        improves(0.97, 1.0, "min", min_delta=0.05)  # False
    """
    delta = min_delta * abs(best) if relative else min_delta
    return current < best - delta if mode == "min" else current > best + delta
