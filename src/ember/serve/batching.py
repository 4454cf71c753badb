"""Dynamic batching: concurrent requests are grouped into one forward pass on a worker thread.

The event loop only enqueues and awaits; one worker thread takes the oldest request, then keeps
adding queued requests with the same per-sample shape until ``max_batch_size`` samples are
gathered, ``max_wait_ms`` has passed since the oldest one arrived, or no other request is on its
way (being read or validated), runs the model once, and hands every caller its own rows. A batch that fails is retried request by request, so one bad input
fails only its own request. ``stop()`` finishes everything already queued before the thread exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.serve.spec import Outputs, check_batched, concat, take

log = logging.getLogger("ember.serve")


class QueueFull(Exception):
    """More requests are waiting than ``max_queue_size`` allows."""


class ShuttingDown(Exception):
    """The batcher was stopped and takes no new requests."""


@dataclass
class _Request:
    batch: np.ndarray
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Runs ``predict`` on batches gathered from concurrent :meth:`submit` calls.

    Args:
        predict: numpy batch -> output tree batched along axis 0 (called on the worker thread only).
        max_batch_size: the most samples in one forward pass (a request with more runs in chunks).
        max_wait_ms: how long the oldest queued request may wait for others to join its batch.
        max_queue_size: the most requests waiting; beyond it :meth:`submit` raises :class:`QueueFull`.
        fixed_batch: a batch size the model requires; smaller batches are padded with zeros.
        on_batch: called as ``on_batch(samples, seconds)`` after every forward pass.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], Outputs],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_size: int = 1024,
        fixed_batch: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.fixed_batch = fixed_batch
        self.on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._arriving = 0

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        """True until :meth:`stop` (and while the worker thread, once started, is alive)."""
        return not self._stopping and (self._thread is None or self._thread.is_alive())

    def start(self) -> None:
        """Start the worker thread (idempotent; :meth:`submit` starts it too)."""
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the batcher has been stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="ember-serve-batcher", daemon=True)
                self._thread.start()

    def submit(self, batch: np.ndarray) -> Future:
        """Queue a batch (axis 0 = samples); the future resolves to its rows of the output tree."""
        if self._thread is None:
            self.start()
        request = _Request(batch)
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue_size:
                raise QueueFull(f"{len(self._queue)} requests are already waiting (max_queue_size)")
            self._queue.append(request)
            self._cond.notify()
        return request.future

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request whose body is still being read and checked (submit inside the block).

        While none is arriving and the queue is empty, the worker does not wait ``max_wait_ms`` for
        company that is not coming: a lone request runs at once.
        """
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify()

    async def run(self, batch: np.ndarray) -> Outputs:
        """:meth:`submit` for the event loop: awaits the result without blocking the loop."""
        return await asyncio.wrap_future(self.submit(batch))

    def stop(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the queued ones, and join the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while True:
            requests = self._next_batch()
            if requests is None:
                return
            try:
                self._run(requests)
            except BaseException as err:  # never let the worker die with callers waiting
                log.exception("batch failed")
                for request in requests:
                    _resolve(request, error=err)

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return None  # stopping, and everything queued is done
                first = self._queue.popleft()
                if first.future.set_running_or_notify_cancel():
                    break
            requests, size = [first], len(first.batch)
            sample_shape = first.batch.shape[1:]
            deadline = first.enqueued + self.max_wait
            while size < self.max_batch_size:
                if not self._queue:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping or self._arriving == 0:
                        break
                    self._cond.wait(remaining)
                    continue
                head = self._queue[0]
                if head.batch.shape[1:] != sample_shape or size + len(head.batch) > self.max_batch_size:
                    break
                self._queue.popleft()
                if head.future.set_running_or_notify_cancel():
                    requests.append(head)
                    size += len(head.batch)
            return requests

    def _run(self, requests: list[_Request]) -> None:
        batch = requests[0].batch if len(requests) == 1 else np.concatenate([r.batch for r in requests])
        try:
            outputs = self._forward(batch)
        except Exception as err:
            if len(requests) == 1:
                _resolve(requests[0], error=err)
                return
            for request in requests:  # find the request that broke the batch; the rest still succeed
                self._run([request])
            return
        start = 0
        for request in requests:
            stop = start + len(request.batch)
            _resolve(request, result=take(outputs, start, stop) if len(requests) > 1 else outputs)
            start = stop

    def _forward(self, batch: np.ndarray) -> Outputs:
        step = self.fixed_batch or self.max_batch_size
        if len(batch) <= step and self.fixed_batch is None:
            return self._timed(batch, len(batch))
        pieces = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            rows = len(chunk)
            if self.fixed_batch is not None and rows < self.fixed_batch:
                padding = np.zeros((self.fixed_batch - rows, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            pieces.append(take(self._timed(chunk, rows), 0, rows))
        return concat(pieces)

    def _timed(self, batch: np.ndarray, rows: int) -> Outputs:
        start = time.perf_counter()
        outputs = self.predict(batch)
        check_batched(outputs, len(batch))
        if self.on_batch is not None:
            self.on_batch(rows, time.perf_counter() - start)
        return outputs


def _resolve(request: _Request, result: Any = None, error: BaseException | None = None) -> None:
    if request.future.done():
        return
    if error is not None:
        request.future.set_exception(error)
    else:
        request.future.set_result(result)
