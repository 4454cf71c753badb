"""The mutable progress of an :class:`~ember.engine.Engine` run, readable by every handler."""

from __future__ import annotations

from typing import Any


class State:
    """What an engine knows about its run.

    ``iteration`` counts iterations over the whole run and ``epoch`` epochs, both from 1 once
    started; ``epoch_length`` is the number of iterations per epoch (``None`` until the data tells,
    for data without a length); ``batch`` and ``output`` are the current batch and what the process
    function returned for it; ``metrics`` is filled by attached metrics; ``times`` holds the
    durations (seconds) of the last epoch (``"EPOCH_COMPLETED"``) and of the run (``"COMPLETED"``).
    Handlers may store their own attributes here as well.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.iteration = 0
        self.epoch = 0
        self.epoch_length: int | None = None
        self.max_epochs: int | None = None
        self.max_iters: int | None = None
        self.output: Any = None
        self.batch: Any = None
        self.metrics: dict[str, Any] = {}
        self.dataloader: Any = None
        self.seed: int | None = None
        self.times: dict[str, float | None] = {"EPOCH_COMPLETED": None, "COMPLETED": None}
        for k, v in kwargs.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        fields = ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters")
        return "State(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + ")"
