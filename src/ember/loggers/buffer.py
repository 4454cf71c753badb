"""Buffered metric writing: ``log_metrics`` appends, writes happen in batches.

Per-step logging must cost next to nothing (docs/architecture.md, "Rules for speed" 1), so a logger's ``log_metrics`` only
appends ``(step, walltime, names, values)`` to a queue; values on a device stay tensors there. About
every ``interval`` seconds everything queued is taken at once: the device values are copied to the
host in one non-blocking transfer per device (the logging thread writes them once the copy is done,
never waiting for the device itself) and the logger's ``write`` function gets plain floats (and
leaves what it wrote with the OS, so a crash loses at most the last interval). ``flush()`` writes
everything at once in the calling thread, waiting for copies (epoch end, ``save()``, exit).

Who writes: with ``inline=True`` (cheap, CPU-bound writes such as TensorBoard's) the thread that
logs, when an ``add()`` finds the interval over — a background thread doing that work would hold
the interpreter lock while the training thread waits for it between its operations; a daemon
thread still writes what is queued once nothing has been logged for an interval. With
``inline=False`` (writes that wait on I/O: a tracking server, a database) the daemon thread does
every write; an error raised there is raised again by the next ``add()`` or ``flush()``.
"""

from __future__ import annotations

import atexit
import numbers
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch

# (step, walltime, names, values); written with floats as values
Entry = tuple[int, float, tuple[str, ...], Any]

_live: weakref.WeakSet[MetricBuffer] = weakref.WeakSet()


class MetricBuffer:
    """A queue of ``add(step, metrics)`` calls written in batches by ``write(entries)``, each entry
    ``(step, walltime, names, values)`` with float values and names as ``rename`` makes them.
    ``enabled()`` is asked at each write (e.g. "is this rank zero?"); when it says no, the queued
    values are dropped."""

    def __init__(
        self,
        write: Callable[[list[Entry]], None],
        interval: float = 1.0,
        name: str = "ember-logger",
        inline: bool = False,
        enabled: Callable[[], bool] = lambda: True,
        rename: Callable[[str], str] = str,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"flush interval must be a positive number of seconds, got {interval!r}")
        self._write = write
        self._enabled = enabled
        self._rename = rename
        self.interval = float(interval)
        self.inline = inline
        self._name = name
        # (step, walltime, names, values): tuples of plain values, which the garbage collector stops
        # tracking before they reach its oldest generation (a tuple holding a dict stays tracked, and
        # thousands promoted every second trigger full collections that cost the training loop dearly)
        self._queue: deque[Entry] = deque()
        self.lock = threading.Lock()  # one writer at a time: the thread, a flush() or the logger itself
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._due = 0.0  # inline: when the next add() writes
        self._names: tuple[str, ...] = ()  # the last names given, and what they are logged as
        self._keys: tuple[str, ...] = ()
        self._staged: list[tuple[list[Entry], Callable[[bool], bool]]] = []  # device values on their way
        _live.add(self)

    def add(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Queue ``metrics`` (numbers or scalar tensors) for ``step``; the values of CPU tensors are
        read now (no host-device synchronisation, and floats keep the queue out of the garbage
        collector's sight), tensors on a device are kept until written."""
        if self._error is not None:
            self._raise()
        now = time.time()
        names = tuple(metrics)
        if names != self._names:  # renamed once while the names repeat, and one tuple shared
            self._keys = tuple(self._rename(k) for k in names)
            self._names = names
        values = []
        tensor = torch.Tensor
        try:
            for value in metrics.values():
                if type(value) is not float:
                    if isinstance(value, tensor):
                        if value.is_cpu:
                            value = value.item()
                    elif not isinstance(value, numbers.Real):
                        raise TypeError
                values.append(value)
        except (TypeError, RuntimeError):
            raise _bad_value(metrics) from None
        self._queue.append((step, now, self._keys, tuple(values)))
        if self._thread is None:
            self._start()
        elif self.inline and now >= self._due and self.lock.acquire(blocking=False):
            try:
                self._drain_locked(wait=False)
            finally:
                self.lock.release()

    def __len__(self) -> int:
        return len(self._queue) + sum(len(rows) for rows, _ in self._staged)

    def flush(self) -> None:
        """Write everything queued so far, now, in the calling thread."""
        if self._error is not None:
            self._raise()
        with self.lock:
            self._drain_locked()

    def close(self) -> None:
        """Stop the thread and write what is left (also done for every live buffer at exit)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()
        self._stop.clear()

    def _start(self) -> None:
        self._stop.clear()
        self._due = time.time() + self.interval
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.inline and time.time() < self._due:
                continue  # the logging thread is writing as it goes
            try:
                with self.lock:
                    self._drain_locked()
            except BaseException as err:  # surfaced in the caller's thread by add()/flush()
                self._error = err
                return

    def _drain_locked(self, wait: bool = True) -> None:
        """Write what is queued; without ``wait``, values still being copied from a device stay
        staged for the next time (so the logging thread never waits for the device)."""
        queue = self._queue
        entries = [queue.popleft() for _ in range(len(queue))]
        self._due = time.time() + self.interval
        if not self._enabled():  # checked per write, not per add(): e.g. only rank zero writes
            self._staged = []
            return
        ready: list[Entry] = []
        staged = []
        for rows, finish in self._staged:
            if finish(wait):
                ready += rows
            else:
                staged.append((rows, finish))
        if entries:
            rows, finish = stage(entries)
            if finish is None or finish(wait):
                ready += rows
            else:
                staged.append((rows, finish))
        self._staged = staged
        if ready:
            self._write(ready)

    def _raise(self) -> None:
        err, self._error = self._error, None
        self._thread = None
        raise RuntimeError(f"{self._name}: writing logged metrics failed: {err}") from err


def _bad_value(metrics: Mapping[str, Any]) -> Exception:
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                return ValueError(f"log_metrics: {key!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        elif not isinstance(value, numbers.Real):
            return TypeError(f"log_metrics: {key!r} must be a number or a scalar tensor, got {type(value).__name__}")
    return TypeError("log_metrics: values must be numbers or scalar tensors")


def to_host(entries: list[Entry]) -> list[Entry]:
    """``(step, walltime, names, values)`` entries with float values (waits for device values)."""
    rows, finish = stage(entries)
    if finish is not None:
        finish(True)
    return rows


def stage(entries: list[Entry]) -> tuple[list[Entry], Callable[[bool], bool] | None]:
    """Start moving the tensor values of ``entries`` to the host.

    Entries holding only floats are passed on as they are (no new objects). CPU tensors and other
    numbers are read at once. Values on a device are stacked per device and dtype and copied
    without blocking; then ``finish(wait)`` fills them in and returns True — or, with
    ``wait=False`` while a copy is still running, returns False without waiting (no host-device
    synchronisation on the logging thread; call it again later). ``finish`` is None when there is
    nothing to wait for.
    """
    rows: list[Entry] = []
    on_device: dict[tuple[torch.device, torch.dtype], list[tuple[list[Any], int, torch.Tensor]]] = {}
    tensor = torch.Tensor
    for entry in entries:
        step, walltime, keys, values = entry
        for v in values:
            if type(v) is not float:
                break
        else:  # floats only: passed on as they are
            rows.append(entry)
            continue
        floats: list[Any] = list(values)
        for i, value in enumerate(values):
            if isinstance(value, tensor):
                if value.numel() != 1:
                    raise ValueError(f"metric {keys[i]!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
                if value.is_cpu:
                    floats[i] = value.item()
                else:
                    on_device.setdefault((value.device, value.dtype), []).append((floats, i, value))
            else:
                floats[i] = float(value)
        rows.append((step, walltime, keys, floats))
    if not on_device:
        return rows, None
    copies = []
    with torch.no_grad():
        for (device, _), items in on_device.items():
            stacked = torch.stack([t if t.ndim == 0 else t.reshape(()) for _, _, t in items])
            copies.append((items, *_start_copy(stacked, device)))

    def finish(wait: bool) -> bool:
        for _, _, done in copies:
            if done is not None and not wait and not done.query():
                return False
        for items, host, done in copies:
            if done is not None:
                done.synchronize()  # an event wait: not a call torch.cuda.set_sync_debug_mode rejects
            for (floats, i, _), f in zip(items, host.tolist()):
                floats[i] = float(f)
        return True

    return rows, finish


def _start_copy(t: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, Any]:
    if device.type == "cuda":
        with torch.cuda.device(device):  # the event goes on the stream the copy was queued on
            host = t.to("cpu", non_blocking=True)  # into pinned memory, after the values are computed
            done = torch.cuda.Event()
            done.record()
        return host, done
    return t.cpu(), None  # other devices: a plain (waiting) copy


@atexit.register
def _flush_at_exit() -> None:
    for buffer in list(_live):
        try:
            buffer.close()
        except Exception:  # the interpreter is going away; nothing useful to raise to
            pass
