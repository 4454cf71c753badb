"""The mutable progress of an :class:`~ember.engine.Engine` run, readable by every handler."""

from __future__ import annotations

from typing import Any

from ember.engine.events import CallableEventWithFilter


class State:
    """What an engine knows about its run.

    ``iteration`` counts iterations over the whole run and ``epoch`` epochs, both from 1 once
    started; ``epoch_iteration`` counts the iterations of the current epoch (the batch being
    processed is number ``epoch_iteration`` of its epoch, from 1; after an epoch, how many it had);
    ``epoch_length`` is the number of iterations per epoch (``None`` until the data tells, for data
    without a length); ``batch`` and ``output`` are the current batch and what the process
    function returned for it; ``metrics`` is filled by attached metrics; ``times`` holds the
    durations (seconds) of the last epoch (``"EPOCH_COMPLETED"``) and of the run (``"COMPLETED"``).
    Handlers may store their own attributes here as well.

    ``event_to_attr`` maps an event's name to the attribute that counts it (``"iteration"`` for batch
    and iteration events, ``"epoch"`` for epoch events, plus what ``engine.register_events(...,
    event_to_attr=...)`` added for this engine's custom events); :meth:`get_event_attrib_value`
    reads that counter, as in Ignite.
    """

    #: the built-in events' counters; each State starts from a copy, which its engine extends
    event_to_attr: dict[str, str] = {
        "STARTED": "epoch",
        "EPOCH_STARTED": "epoch",
        "GET_BATCH_STARTED": "iteration",
        "GET_BATCH_COMPLETED": "iteration",
        "ITERATION_STARTED": "iteration",
        "ITERATION_COMPLETED": "iteration",
        "EPOCH_COMPLETED": "epoch",
        "COMPLETED": "epoch",
    }

    def __init__(self, **kwargs: Any) -> None:
        self.iteration = 0
        self.epoch = 0
        self.epoch_iteration = 0
        self.epoch_length: int | None = None
        self.max_epochs: int | None = None
        self.max_iters: int | None = None
        self.output: Any = None
        self.batch: Any = None
        self.metrics: dict[str, Any] = {}
        self.dataloader: Any = None
        self.times: dict[str, float | None] = {"EPOCH_COMPLETED": None, "COMPLETED": None}
        # per instance: custom events registered on one engine do not leak into another
        self.event_to_attr: dict[str, str] = dict(State.event_to_attr)
        for k, v in kwargs.items():
            setattr(self, k, v)

    def get_event_attrib_value(self, event_name: Any) -> Any:
        """The counter of ``event_name`` (an ``Events`` member, filtered or not, a registered custom
        event or its name): ``state.iteration`` for ``ITERATION_COMPLETED``, ``state.epoch`` for
        ``EPOCH_COMPLETED``, ... Raises ``RuntimeError`` for an event without a counter (as Ignite)."""
        key = event_name.name if isinstance(event_name, CallableEventWithFilter) else event_name
        attr = self.event_to_attr.get(key) if isinstance(key, str) else None
        if attr is None:
            raise RuntimeError(
                f"event {event_name!r} has no state attribute: known {sorted(self.event_to_attr)}; "
                f"map a custom event with engine.register_events(..., event_to_attr={{event: 'attribute'}})"
            )
        return getattr(self, attr)

    def __repr__(self) -> str:
        fields = ("iteration", "epoch", "epoch_iteration", "epoch_length", "max_epochs", "max_iters")
        return "State(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + ")"
