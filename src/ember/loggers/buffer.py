"""Buffered metric writing: ``log_metrics`` appends, a daemon thread writes in batches.

Per-step logging must cost next to nothing (DESIGN.md rule 1), so a logger's ``log_metrics`` only
appends ``(step, walltime, metrics)`` to a queue, values still tensors on their device. Every
``interval`` seconds a daemon thread takes what is queued, moves all tensor values to the host in
one transfer per device and passes plain floats to the logger's ``write`` function (which leaves
what it wrote with the OS, so a crash loses at most the last interval). ``flush()``
does the same at once in the calling thread (epoch end, ``save()``, exit). An error raised in the
thread is raised again by the next ``add()`` or ``flush()``.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch

Entry = tuple[int, float, dict[str, float]]

_live: weakref.WeakSet[MetricBuffer] = weakref.WeakSet()


class MetricBuffer:
    """A queue of ``(step, walltime, metrics)`` written in batches by ``write(entries)``."""

    def __init__(self, write: Callable[[list[Entry]], None], interval: float = 1.0, name: str = "ember-logger") -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"flush interval must be a positive number of seconds, got {interval!r}")
        self._write = write
        self.interval = float(interval)
        self._name = name
        self._queue: deque[tuple[int, float, Mapping[str, Any]]] = deque()
        self.lock = threading.Lock()  # one writer at a time: the thread, a flush() or the logger itself
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        _live.add(self)

    def add(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._error is not None:
            self._raise()
        self._queue.append((step, time.time(), metrics))
        if self._thread is None:
            self._start()

    def __len__(self) -> int:
        return len(self._queue)

    def flush(self) -> None:
        """Write everything queued so far, now, in the calling thread."""
        if self._error is not None:
            self._raise()
        self._drain()

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
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._drain()
            except BaseException as err:  # surfaced in the caller's thread by add()/flush()
                self._error = err
                return

    def _drain(self) -> None:
        with self.lock:
            queue = self._queue
            entries = [queue.popleft() for _ in range(len(queue))]
            if entries:
                self._write(to_host(entries))

    def _raise(self) -> None:
        err, self._error = self._error, None
        self._thread = None
        raise RuntimeError(f"{self._name}: writing logged metrics failed: {err}") from err


def to_host(entries: list[tuple[int, float, Mapping[str, Any]]]) -> list[Entry]:
    """Entries with every tensor value replaced by a float: CPU tensors read one by one (cheapest),
    others stacked and moved in one transfer per device and dtype."""
    out: list[Entry] = []
    deferred: dict[tuple[torch.device, torch.dtype], list[tuple[dict[str, float], str, torch.Tensor]]] = {}
    tensor = torch.Tensor
    for step, walltime, metrics in entries:
        row: dict[str, float] = {}
        for key, value in metrics.items():
            if isinstance(value, tensor):
                if value.numel() != 1:
                    raise ValueError(f"metric {key!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
                if value.is_cpu:
                    row[key] = value.item()
                else:
                    deferred.setdefault((value.device, value.dtype), []).append((row, key, value))
                    row[key] = 0.0  # keeps the key order
            else:
                row[key] = float(value)
        out.append((step, walltime, row))
    for (device, _), items in deferred.items():
        with torch.no_grad():
            stacked = torch.stack([t if t.ndim == 0 else t.reshape(()) for _, _, t in items])
        for (row, key, _), f in zip(items, _device_to_list(stacked, device)):
            row[key] = float(f)
    return out


def _device_to_list(t: torch.Tensor, device: torch.device) -> list[Any]:
    if device.type == "cuda":
        # a non-blocking copy and an event wait: the writer thread waits for the device, and no
        # synchronising call is made that torch.cuda.set_sync_debug_mode("error") would reject
        host = t.to("cpu", non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        done.synchronize()
        return host.tolist()
    return t.cpu().tolist()


@atexit.register
def _flush_at_exit() -> None:
    for buffer in list(_live):
        try:
            buffer.close()
        except Exception:  # the interpreter is going away; nothing useful to raise to
            pass
