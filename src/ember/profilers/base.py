"""The profiler interface (Lightning's ``Profiler``), the do-nothing profiler a Trainer uses by
default, and the wrapper that times a call.

A Trainer calls ``setup(stage, local_rank, log_dir)`` when a stage starts, ``start(name)`` /
``stop(name)`` around each profiled action, and ``describe()`` when the stage ends: the report
goes to ``<dirpath>/<stage>-<filename>.txt`` when ``filename`` is given (``dirpath`` defaults to the
Trainer's ``log_dir``), else it is printed (by local rank 0). With ``Trainer(profiler=None)`` the
profiler is a :class:`PassThroughProfiler` and the Trainer wraps nothing: a step costs what it
costs without a profiler (docs/architecture.md, *Rules for speed*).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[\\/:*?\"<>|\n\r\t]+")


class Profiler:
    """Base class of the profilers: override :meth:`start`, :meth:`stop` and :meth:`summary`.

    Example::

        class Wall(Profiler):
            def start(self, action_name): ...
            def stop(self, action_name): ...
            def summary(self): return "report text"

        trainer = ember.Trainer(profiler=Wall(dirpath="prof", filename="wall"))

    In a module or callback, ``with self.trainer.profiler.profile("my_action"): ...`` times a block.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None, filename: str | None = None) -> None:
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"dirpath={dirpath!r} must be a path (str or os.PathLike) or None")
        if filename is not None and (not isinstance(filename, str) or not filename.strip()):
            raise ValueError(f"filename={filename!r} must be a non-empty string or None")
        self.dirpath = dirpath
        self.filename = filename
        self._stage: str | None = None
        self._local_rank: int | None = None

    def start(self, action_name: str) -> None:
        """Start timing ``action_name``."""
        raise NotImplementedError

    def stop(self, action_name: str) -> None:
        """Stop timing ``action_name`` and record it."""
        raise NotImplementedError

    def summary(self) -> str:
        """The report as text ("" for none)."""
        return ""

    @contextlib.contextmanager
    def profile(self, action_name: str) -> Iterator[str]:
        """Time the block inside ``with profiler.profile(name):``."""
        self.start(action_name)
        try:
            yield action_name
        finally:
            self.stop(action_name)

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        """A stage starts: ``stage`` names the report; ``log_dir`` is the default ``dirpath``."""
        self._stage = stage
        self._local_rank = local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: str | None) -> None:
        """A stage ended (also after an error): release what the profiler holds."""

    def describe(self) -> None:
        """Write the report to the file (``filename`` given) or print it (local rank 0), then tear down."""
        text = self.summary()
        if text:
            path = self.report_path()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as f:
                    f.write(text)
            elif self.local_rank == 0:
                print(text)
        self.teardown(stage=self._stage)

    def report_path(self, action_name: str | None = None, extension: str = ".txt") -> Path | None:
        """Where the report goes: ``<dirpath>/<stage>-<filename>[-<rank>].txt``, or None to print it."""
        if not (self.filename and self.dirpath):
            return None
        return Path(os.fspath(self.dirpath)).expanduser() / self._file_name(action_name, extension)

    def _file_name(self, action_name: str | None, extension: str) -> str:
        parts = [p for p in (self._stage, self.filename) if p]
        if self._local_rank is not None:
            parts.append(str(self._local_rank))
        if action_name is not None:
            parts.append(action_name)
        base = _UNSAFE.sub("_", "-".join(parts)).strip() or "profile"
        return base + extension

    def _header(self) -> str:
        return f"{self._stage.upper()} Profiler Report" if self._stage else "Profiler Report"

    @property
    def local_rank(self) -> int:
        """The process's local rank given to :meth:`setup` (0 in a single process)."""
        return 0 if self._local_rank is None else self._local_rank


class PassThroughProfiler(Profiler):
    """Records nothing: what ``Trainer(profiler=None)`` uses, so that ``trainer.profiler.profile(...)``
    works in user code; the Trainer itself wraps nothing when it is the profiler."""

    def start(self, action_name: str) -> None:
        return None

    def stop(self, action_name: str) -> None:
        return None

    @contextlib.contextmanager
    def profile(self, action_name: str) -> Iterator[str]:
        yield action_name

    def describe(self) -> None:
        return None


def active(profiler: Any) -> Profiler | None:
    """``profiler`` when it records something, else None (no profiler, or a pass-through one)."""
    return None if profiler is None or isinstance(profiler, PassThroughProfiler) else profiler


def profiled(fn: Callable, name: str, profiler: Profiler) -> Callable:
    """``fn`` timed as the action ``name`` on every call (only built when a profiler is active)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        profiler.start(name)
        try:
            return fn(*args, **kwargs)
        finally:
            profiler.stop(name)

    timed.__name__ = getattr(fn, "__name__", "timed")
    timed.__wrapped__ = fn  # type: ignore[attr-defined]
    return timed


class Span:
    """An action opened by one engine event and closed by another (an epoch, a batch fetch): a
    second open closes the first (a fetch that met the end of the data), and :meth:`close` ends
    one left open when a run stops early."""

    __slots__ = ("name", "open", "profiler")

    def __init__(self, profiler: Profiler, name: str) -> None:
        self.profiler, self.name, self.open = profiler, name, False

    def begin(self, *_: Any) -> None:
        if self.open:
            self.profiler.stop(self.name)
        self.profiler.start(self.name)
        self.open = True

    def end(self, *_: Any) -> None:
        if self.open:
            self.open = False
            self.profiler.stop(self.name)

    close = end
