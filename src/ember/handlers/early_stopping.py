"""Engine-level early stopping with Ignite's arguments (and its older ``min_delta``/``cumulative_delta``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ember.checkpoint.monitor import check_mode, improves
from ember.engine.events import Priority


class EarlyStopping:
    """Stops a run when ``score_function(engine)`` has not improved for ``patience`` calls.

    Attach it to the engine whose events should trigger the check (often an evaluator)::

        handler = EarlyStopping(patience=5, score_function=lambda e: -e.state.metrics["loss"], trainer=trainer)
        evaluator.add_event_handler(Events.COMPLETED, handler)

    ``trainer`` is the engine to stop; when omitted, the engine the handler is attached to stops.
    An improvement must exceed ``threshold`` (absolute, or relative to the best with
    ``threshold_mode="rel"``); with ``cumulative=True`` the best only moves on an improvement, so
    small gains must add up. ``mode="min"`` for scores that should go down.
    """

    ember_priority = Priority.EARLY_STOPPING

    def __init__(
        self,
        patience: int,
        score_function: Callable[[Any], float],
        trainer: Any = None,
        threshold: float = 0.0,
        cumulative: bool = False,
        threshold_mode: str = "abs",
        mode: str = "max",
        min_delta: float | None = None,
        cumulative_delta: bool | None = None,
    ) -> None:
        if not callable(score_function):
            raise TypeError(f"score_function must be callable(engine) -> float, got {score_function!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience={patience!r} must be a positive integer")
        if min_delta is not None:
            threshold = min_delta
        if cumulative_delta is not None:
            cumulative = cumulative_delta
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
            raise ValueError(f"threshold/min_delta={threshold!r} must be a non-negative number")
        if threshold_mode not in ("abs", "rel"):
            raise ValueError(f"threshold_mode={threshold_mode!r}; choose 'abs' or 'rel'")
        check_mode(mode)
        if trainer is not None and not callable(getattr(trainer, "terminate", None)):
            raise TypeError(f"trainer must be an Engine (something with terminate()), got {type(trainer).__name__}")
        self.patience = patience
        self.score_function = score_function
        self.trainer = trainer
        self.threshold = float(threshold)
        self.cumulative = cumulative
        self.threshold_mode = threshold_mode
        self.mode = mode
        self.counter = 0
        self.best_score: float | None = None
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    def reset(self) -> None:
        """Forget the best score and the count of calls without improvement (Ignite's ``reset``)."""
        self.counter = 0
        self.best_score = None

    def __call__(self, engine: Any) -> None:
        score = float(self.score_function(engine))
        if self.best_score is None:
            self.best_score = score
            return
        if improves(score, self.best_score, self.mode, self.threshold, relative=self.threshold_mode == "rel"):
            self.best_score = score
            self.counter = 0
            return
        if not self.cumulative and improves(score, self.best_score, self.mode):
            self.best_score = score
        self.counter += 1
        self.logger.debug("EarlyStopping: %i / %i", self.counter, self.patience)
        if self.counter >= self.patience:
            self.logger.info("EarlyStopping: stopping the run")
            (self.trainer if self.trainer is not None else engine).terminate()

    def state_dict(self) -> dict[str, Any]:
        """The count of calls without improvement and the best score so far, for a checkpoint."""
        return {"counter": self.counter, "best_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (``"counter"`` and ``"best_score"``, which may be None)."""
        self.counter = int(state["counter"])
        self.best_score = None if state["best_score"] is None else float(state["best_score"])
