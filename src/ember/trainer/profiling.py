"""Timing a stage's loop with the Trainer's profiler: the actions Lightning reports, as spans
between engine events, attached for one stage only when a profiler is active.

Hooks are timed by :class:`~ember.trainer.hooks.Dispatch`, and training_step, backward and the
optimizer step by :mod:`ember.trainer.stepping`; this module adds the loop-level actions::

    run_training_epoch                         train engine EPOCH_STARTED -> EPOCH_COMPLETED
    run_training_batch                         ITERATION_STARTED (after its hooks) -> ITERATION_COMPLETED (before them)
    [_TrainingEpochLoop].train_dataloader_next GET_BATCH_STARTED -> GET_BATCH_COMPLETED
    [Strategy]<strategy>.validation_step       the same span on the validation engine (test_step, predict_step)
    [_EvaluationLoop].val_next                 its batch fetch (test_next; [_PredictionLoop].predict_next)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ember.engine import Events
from ember.profilers.base import Profiler, Span, active

_FIRST, _LAST = 10_000, -10_000  # around every other handler of the event
_EVAL = {
    "validate": ("validation_step", "[_EvaluationLoop].val_next"),
    "test": ("test_step", "[_EvaluationLoop].test_next"),
    "predict": ("predict_step", "[_PredictionLoop].predict_next"),
}


def setup_stage(trainer: Any, stage: str) -> Callable[[bool], None] | None:
    """Tell an active profiler that ``stage`` starts and time its loops; returns ``finish(ok)``,
    which detaches the timing and writes the report (``ok``) or only releases the profiler. None
    when no profiler is active: nothing is attached."""
    prof = active(getattr(trainer, "profiler", None))
    if prof is None:
        return None
    prof.setup(stage, trainer.local_rank if trainer.world_size > 1 else None, trainer.log_dir)
    strategy = type(trainer.strategy).__name__
    spans: list[Span] = []
    handles: list[Any] = []
    if stage == "fit":
        _train_spans(prof, trainer.train_engine, spans, handles)
        engines = [("validate", trainer._eval["validate"].engine)]
    else:
        engines = [(stage, trainer._eval[stage].engine)]
    for name, engine in engines:
        step, fetch = _EVAL[name]
        _span(prof, engine, f"[Strategy]{strategy}.{step}", Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, spans, handles)
        _span(prof, engine, fetch, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED, spans, handles)

    def finish(ok: bool) -> None:
        for h in handles:
            h.remove()
        for span in spans:
            span.close()
        if ok:
            prof.describe()
        else:
            prof.teardown(stage)

    return finish


def _train_spans(prof: Profiler, engine: Any, spans: list[Span], handles: list[Any]) -> None:
    _span(prof, engine, "run_training_epoch", Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, spans, handles)
    _span(prof, engine, "run_training_batch", Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, spans, handles)
    fetch = "[_TrainingEpochLoop].train_dataloader_next"
    _span(prof, engine, fetch, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED, spans, handles)


def _span(prof: Profiler, engine: Any, name: str, begin: Any, end: Any, spans: list[Span], handles: list[Any]) -> None:
    span = Span(prof, name)
    spans.append(span)
    handles.append(engine.add_event_handler(begin, span.begin, priority=_LAST))
    handles.append(engine.add_event_handler(end, span.end, priority=_FIRST))
