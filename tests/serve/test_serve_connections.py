"""Connections cannot be held forever (idle, slowloris, slow body, kept alive, too many), and a client that
disconnects mid-body is a client abort: no traceback, no 500. Real sockets against a real uvicorn server.

Every wait is bounded (``BOUND`` seconds, many times the limits under test): these tests check that a
connection is closed at all, never how fast.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
from serving import LiveServer, parse_metrics, seeded_classifier

from ember.serve import create_app

BOUND = 15.0  # seconds a test waits for the server to close a connection (the limits are 0.5-1 s)
LIMITS = {"timeout_keep_alive": 0.5, "timeout_headers": 0.5, "timeout_body": 1.0}
HEAD = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(create_app(seeded_classifier()), **LIMITS) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=BOUND)


def closed_by_server(sock: socket.socket, trickle: bytes = b"", every: float = 0.1) -> tuple[bool, bytes]:
    """Send ``trickle`` every ``every`` seconds (nothing if empty) and read until the server closes the
    connection or ``BOUND`` passes: (whether it closed it, what it sent)."""
    received = b""
    deadline = time.monotonic() + BOUND
    sock.settimeout(every)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = None
        except ConnectionResetError:
            return True, received
        if chunk == b"":
            return True, received
        received += chunk or b""
        if trickle:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return True, received
    return False, received


def metrics(server: LiveServer) -> dict[str, float]:
    with server.client() as client:
        return parse_metrics(client.get("/metrics").text)


def test_an_idle_new_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        closed, received = closed_by_server(sock)
    assert closed, f"an idle connection stayed open {BOUND} s"
    assert received == b""  # nothing was asked, nothing is answered


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(server: LiveServer) -> None:
    before = metrics(server).get('ember_connections_closed_total{reason="headers_timeout"}', 0)
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\n")
        closed, received = closed_by_server(sock, trickle=b"X")  # a header that never ends
    assert closed, f"a slowloris connection stayed open {BOUND} s"
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"within 0.5 s (timeout_headers)" in received
    assert metrics(server)['ember_connections_closed_total{reason="headers_timeout"}'] == before + 1


def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(server: LiveServer) -> None:
    before = metrics(server).get('ember_connections_closed_total{reason="body_timeout"}', 0)
    with connect(server) as sock:
        sock.sendall(HEAD % 10_000 + b'{"inputs": [')
        closed, received = closed_by_server(sock, trickle=b"0")
    assert closed, f"a slow-body connection stayed open {BOUND} s"
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"within 1 s (timeout_body)" in received
    after = metrics(server)
    assert after['ember_connections_closed_total{reason="body_timeout"}'] == before + 1
    assert 'ember_requests_total{path="/predict",status="500"}' not in after


def test_requests_within_the_limits_are_served_and_an_idle_kept_alive_connection_is_closed(
    server: LiveServer,
) -> None:
    before = metrics(server).get('ember_connections_closed_total{reason="keep_alive_timeout"}', 0)
    body = b'{"inputs": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]}'
    with connect(server) as sock:
        for _ in range(3):  # one connection, several requests, each sent in pieces within the limits
            request = HEAD % len(body) + body
            for start in range(0, len(request), 40):
                sock.sendall(request[start : start + 40])
                time.sleep(0.01)
            response = b""
            while b'"outputs"' not in response or not response.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, "the server closed a connection that respected the limits"
                response += chunk
            assert response.startswith(b"HTTP/1.1 200 ")
        closed, received = closed_by_server(sock)  # then idle
    assert closed, f"an idle keep-alive connection stayed open {BOUND} s"
    assert received == b""
    assert metrics(server)['ember_connections_closed_total{reason="keep_alive_timeout"}'] == before + 1


def test_connections_beyond_max_connections_get_503_and_are_closed() -> None:
    app = create_app(seeded_classifier())
    with LiveServer(app, timeout_keep_alive=60, timeout_headers=60, max_connections=4) as server:
        held = [connect(server) for _ in range(4)]
        try:
            for sock in held:  # each answered, so each is surely counted by the server
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            with connect(server) as extra:
                closed, received = closed_by_server(extra)
            assert closed and received.startswith(b"HTTP/1.1 503 "), received
            assert b"4 connections open" in received
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + BOUND
        while True:  # the closed ones free their places
            with connect(server) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                _, received = closed_by_server(sock)
            if received.startswith(b"HTTP/1.1 200 "):
                break
            assert time.monotonic() < deadline, received
            time.sleep(0.1)
        assert metrics(server)['ember_connections_closed_total{reason="connection_limit"}'] >= 1


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_disconnecting_mid_body_is_a_client_abort_not_a_500() -> None:
    app = create_app(seeded_classifier())
    with LiveServer(app) as server:
        records = Records()
        loggers = [logging.getLogger(name) for name in ("uvicorn.error", "ember.serve")]
        for logger in loggers:
            logger.addHandler(records)
        try:
            for _ in range(5):
                with connect(server) as sock:
                    sock.sendall(HEAD % 100_000 + b'{"inputs": [' + b"0.5, " * 200)
                    time.sleep(0.05)  # the app is reading the body
                deadline = time.monotonic() + BOUND
                while metrics(server).get('ember_client_aborts_total{path="/predict"}', 0) < _ + 1:
                    assert time.monotonic() < deadline, "the abort was never counted"
                    time.sleep(0.05)
        finally:
            for logger in loggers:
                logger.removeHandler(records)
        with server.client() as client:  # and the server is fine
            assert client.post("/predict", json={"inputs": [[0.0] * 4] * 3}).status_code == 200
        after = metrics(server)
    assert after['ember_client_aborts_total{path="/predict"}'] == 5
    assert not [key for key in after if key.startswith("ember_requests_total") and 'status="500"' in key]
    assert after['ember_requests_total{path="/predict",status="200"}'] == 1
    problems = [r.getMessage() for r in records.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not problems, problems
