"""What ``serve`` runs: uvicorn with deadlines on every connection and a connection limit.

uvicorn closes a keep-alive connection that stays idle, but with its h11 protocol it waits forever for a
request's headers and body and accepts any number of connections: idle, slowloris (headers a byte at a
time) and slow-body clients each hold a connection, and a file descriptor, for good. The protocol built
here (uvicorn's h11 protocol plus timers) gives each connection exactly one deadline at a time:

- from its opening, and from the first byte of each later request, until the request's headers are in:
  ``timeout_headers`` (an idle new connection is closed; one with a partial request gets a 408 first);
- from the headers until the body is in: ``timeout_body`` (a 408 unless an answer was already sent);
- while the app works on a complete request: none; after the answer: ``timeout_keep_alive`` (uvicorn's).

A connection beyond ``max_connections`` is answered 503 and closed at once. Each closure counts in
``/metrics`` (``ember_connections_closed_total{reason}``: ``headers_timeout``, ``body_timeout``,
``keep_alive_timeout``, ``connection_limit``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ember.optional import require


@dataclass(frozen=True)
class ConnectionLimits:
    """Timeouts in seconds and the most connections open at once (see the module docstring)."""

    timeout_keep_alive: float = 5.0
    timeout_headers: float = 10.0
    timeout_body: float = 60.0
    max_connections: int = 512

    def __post_init__(self) -> None:
        for label in ("timeout_keep_alive", "timeout_headers", "timeout_body"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{label}={value!r}; expected a number of seconds > 0")
        value = self.max_connections
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_connections={value!r}; expected an integer >= 1")


def server_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    timeout_keep_alive: float = 5.0,
    timeout_headers: float = 10.0,
    timeout_body: float = 60.0,
    max_connections: int = 512,
    **uvicorn_options: Any,
) -> Any:
    """The ``uvicorn.Config`` that runs ``app`` with these limits: ``uvicorn.Server(config).run()``.

    The limits are described in the module docstring; ``uvicorn_options`` go to ``uvicorn.Config``
    (``log_level``, ``timeout_graceful_shutdown``, ...). For an app from :func:`ember.serve.create_app`,
    the connections closed by a limit count in its ``/metrics``. The protocol is always uvicorn's h11.
    """
    limits = ConnectionLimits(timeout_keep_alive, timeout_headers, timeout_body, max_connections)
    uvicorn = require("uvicorn", "serve")
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    on_close = metrics.observe_connection_closed if metrics is not None else (lambda reason: None)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits, on_close),
        timeout_keep_alive=limits.timeout_keep_alive,
        **uvicorn_options,
    )


def guarded_protocol(limits: ConnectionLimits, on_close: Callable[[str], None]) -> type:
    """uvicorn's h11 protocol class with the deadlines and the limit of ``limits``; ``on_close(reason)``
    is called for each connection it closes."""
    h11_impl = require("uvicorn.protocols.http.h11_impl", "serve")

    class GuardedH11Protocol(h11_impl.H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: Any = None  # the armed asyncio.TimerHandle
            self._phase = ""  # what the deadline waits for: "headers" or "body"
            self._partial = False  # bytes of a request arrived since the headers deadline was armed
            self._timed_cycle: Any = None  # the request whose headers were last seen complete

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._close(503, "connection_limit", f"this server has {limits.max_connections} connections open")
                return
            self._arm("headers")

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm("headers")  # the first bytes of the next request on a kept-alive connection
            self._partial = True
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()  # a pipelined request may have started

        def timeout_keep_alive_handler(self) -> None:
            if not self.transport.is_closing():
                on_close("keep_alive_timeout")
            super().timeout_keep_alive_handler()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _follow(self) -> None:
            """Move the deadline along with the request that h11 has parsed so far."""
            cycle = self.cycle
            if cycle is None or self.transport.is_closing():
                return
            if cycle is not self._timed_cycle:  # a new request's headers are complete
                self._timed_cycle = cycle
                self._disarm()
                if cycle.more_body:
                    self._arm("body")
            elif self._phase == "body" and not cycle.more_body:
                self._disarm()

        def _arm(self, phase: str) -> None:
            self._disarm()
            seconds = limits.timeout_headers if phase == "headers" else limits.timeout_body
            self._phase, self._partial = phase, False
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._phase == "headers":
                seconds, status = limits.timeout_headers, 408 if self._partial else None
            else:
                answered = self.cycle is not None and self.cycle.response_started
                seconds, status = limits.timeout_body, None if answered else 408
            detail = f"the request's {self._phase} did not arrive within {seconds:g} s (timeout_{self._phase})"
            self._close(status, f"{self._phase}_timeout", detail)

        def _close(self, status: int | None, reason: str, detail: str) -> None:
            """Answer ``status`` (none: close silently) with ``detail`` and close the connection."""
            if status is not None:
                phrase = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
                body = json.dumps({"detail": detail}).encode()
                head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                self.transport.write(head % (status, phrase, len(body)) + body)
            self.transport.close()
            on_close(reason)

    return GuardedH11Protocol
