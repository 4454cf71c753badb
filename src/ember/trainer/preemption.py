"""Stopping cleanly when the job is told to stop: SIGTERM, SIGUSR1 (SLURM's warning before a time
limit) and the first Ctrl-C (SIGINT) make the Trainer finish the current step, save a checkpoint
and exit with a message; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class Preempted(SystemExit):
    """Raised out of ``fit`` after a stop signal, once the checkpoint to resume from is saved."""

    def __init__(self, signal_name: str, checkpoint_path: str) -> None:
        self.signal_name = signal_name
        self.checkpoint_path = checkpoint_path
        super().__init__(
            f"ember: received {signal_name}; saved a checkpoint to {checkpoint_path!r}. "
            f"Resume with trainer.fit(..., ckpt_path={checkpoint_path!r}) (or ember fit ... --ckpt_path "
            f"{checkpoint_path}); ckpt_path=\"last\" finds it when the run keeps its checkpoint folder."
        )


class SignalWatch:
    """Installs the handlers for one ``fit`` (main thread only); the first signal is recorded and
    passed to ``on_signal`` (the Trainer's fit progress, which stops at the next safe point)."""

    def __init__(self, on_signal: Callable[[str], None]) -> None:
        self.received: str | None = None
        self.on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Start watching (for one ``fit``): forget any earlier signal, install the handlers."""
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return
        for name in SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handler(name))
            except (ValueError, OSError):  # not allowed here (e.g. embedded interpreters)
                continue

    def _handler(self, name: str) -> Callable[[int, Any], None]:
        def handle(signum: int, frame: Any) -> None:
            if self.received is not None and name == "SIGINT":
                raise KeyboardInterrupt  # second Ctrl-C: stop now
            if self.received is None:
                self.received = name
                self.on_signal(name)
            if name == "SIGINT":
                signal.signal(signal.SIGINT, self._second_sigint)

        return handle

    @staticmethod
    def _second_sigint(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous)
            except (ValueError, OSError, TypeError):
                pass
        self._previous = {}
