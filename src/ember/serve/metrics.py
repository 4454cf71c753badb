"""Prometheus metrics for the server, in the text exposition format, without extra dependencies.

Exported series (prefix ``ember_``): ``requests_total{path,status}``, ``request_duration_seconds``
(histogram by path), ``client_aborts_total{path}`` (requests whose connection closed before the answer
was sent: the client went away, or its body was cut by ``timeout_body``), ``connections_closed_total{reason}``
(closed by a limit: ``headers_timeout``, ``body_timeout``, ``keep_alive_timeout``, ``connection_limit``), ``batch_size`` (samples
per forward pass, histogram), ``inference_duration_seconds`` (histogram), ``queue_size`` (gauge) and
``model_info{name,version,format}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger("ember.serve")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: ``le`` upper bounds, plus sum and count)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[index] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> Iterable[str]:
        cumulative = 0
        sep = "," if labels else ""
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            cumulative += count
            le = "+Inf" if bound == float("inf") else _num(bound)
            yield f'{name}_bucket{{{labels}{sep}le="{le}"}} {cumulative}'
        braces = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{braces} {_num(self.sum)}"
        yield f"{name}_count{braces} {self.count}"


class ServerMetrics:
    """Thread-safe counters and histograms of one server (the event loop and the worker both write)."""

    def __init__(self, model_labels: dict[str, str], queue_size: Callable[[], int] = lambda: 0) -> None:
        self._lock = threading.Lock()
        self._model_labels = model_labels
        #: Returns the number of requests waiting for the model (the ``ember_queue_size`` gauge).
        self.queue_size = queue_size
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.client_aborts: dict[str, int] = defaultdict(int)
        self.connections_closed: dict[str, int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            histogram = self.latency.get(path)
            if histogram is None:
                histogram = self.latency[path] = Histogram(LATENCY_BUCKETS)
            histogram.observe(seconds)

    def observe_client_abort(self, path: str) -> None:
        with self._lock:
            self.client_aborts[path] += 1

    def observe_connection_closed(self, reason: str) -> None:
        with self._lock:
            self.connections_closed[reason] += 1

    def observe_batch(self, samples: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(samples)
            self.inference.observe(seconds)

    def render(self) -> str:
        """The metrics in Prometheus' text format (``text/plain; version=0.0.4``)."""
        with self._lock:
            out = [
                "# HELP ember_requests_total HTTP requests by path and status code.",
                "# TYPE ember_requests_total counter",
            ]
            for (path, status), count in sorted(self.requests.items()):
                out.append(f'ember_requests_total{{path="{_esc(path)}",status="{status}"}} {count}')
            out += [
                "# HELP ember_request_duration_seconds Time from request to response.",
                "# TYPE ember_request_duration_seconds histogram",
            ]
            for path, histogram in sorted(self.latency.items()):
                out.extend(histogram.lines("ember_request_duration_seconds", f'path="{_esc(path)}"'))
            out += [
                "# HELP ember_client_aborts_total Requests whose connection closed before the answer was sent.",
                "# TYPE ember_client_aborts_total counter",
            ]
            for path, count in sorted(self.client_aborts.items()):
                out.append(f'ember_client_aborts_total{{path="{_esc(path)}"}} {count}')
            out += [
                "# HELP ember_connections_closed_total Connections closed by a timeout or the connection limit.",
                "# TYPE ember_connections_closed_total counter",
            ]
            for reason, count in sorted(self.connections_closed.items()):
                out.append(f'ember_connections_closed_total{{reason="{_esc(reason)}"}} {count}')
            out += ["# HELP ember_batch_size Samples per forward pass.", "# TYPE ember_batch_size histogram"]
            out.extend(self.batch_size.lines("ember_batch_size"))
            out += [
                "# HELP ember_inference_duration_seconds Time of one forward pass.",
                "# TYPE ember_inference_duration_seconds histogram",
            ]
            out.extend(self.inference.lines("ember_inference_duration_seconds"))
        labels = ",".join(f'{k}="{_esc(v)}"' for k, v in self._model_labels.items())
        out += [
            "# HELP ember_queue_size Requests waiting for the model.",
            "# TYPE ember_queue_size gauge",
            f"ember_queue_size {self.queue_size()}",
            "# HELP ember_model_info The served model.",
            "# TYPE ember_model_info gauge",
            f"ember_model_info{{{labels}}} 1",
        ]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """ASGI middleware that counts every HTTP response by path and status and times it.

    Paths outside ``known_paths`` are counted as ``other`` so clients cannot grow the label set. A request
    whose client disconnected before an answer started is a client abort, not a response: it counts in
    ``client_aborts_total``, and whatever the app raised about the lost connection is not an error.
    """

    def __init__(self, app: Any, metrics: ServerMetrics, known_paths: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, started, disconnected, aborted = 500, False, False, False

        async def receive_watching() -> dict[str, Any]:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status, started, aborted
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                aborted = disconnected  # an answer to nobody
            await send(message)

        path = scope.get("path", "")
        label = path if path in self.known_paths else "other"
        try:
            await self.app(scope, receive_watching, send_with_status)
        except Exception as err:
            if not (disconnected and not started):
                self.metrics.observe_request(label, status, time.perf_counter() - start)
                raise
            log.debug("%s %s: the client disconnected (%s)", scope.get("method"), path, type(err).__name__)
            aborted = True
        else:
            aborted = aborted or (disconnected and not started)
            if not aborted:
                self.metrics.observe_request(label, status, time.perf_counter() - start)
        if aborted:
            self.metrics.observe_client_abort(label)


def _num(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
