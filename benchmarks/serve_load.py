"""Load test for ``ember serve``: 10,000 requests, a mix of valid and invalid, 64 at a time.

Passes when there is no 5xx, every invalid request gets its 4xx, every valid one the model's
answer, and the server's RSS after the run is within 50 MB of its RSS after a warm-up. The server
is the real command (``ember serve model.pt2``) in its own process; RSS is read from /proc (Linux).
CI runs a 1,000-request version of this (tests/serve/test_serve_cli_load.py).

    .venv/bin/python benchmarks/serve_load.py [--requests 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from torch import nn

BODY_LIMIT = 64 * 1024
INVALID: list[tuple[bytes, int]] = [
    (b'{"inputs": [[1, 2], [3, 4]]}', 422),  # wrong shape
    (b'{"inputs": "x"}', 422),  # not numbers
    (b'{"inputs": [[1, 2, 3, NaN], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422),
    (b'{"inputs": [[1, 2, 3, true], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422),
    (b'{"inputs": [[1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 4]]}', 422),  # ragged
    (b'{"inputs": []}', 422),
    (b'{"values": [1]}', 422),
    (b'{"inputs": [[1, 2', 400),
    (b"", 400),
    (b'{"inputs": [' + b"0.0," * 20_000 + b"0]}", 413),
]


class Model(nn.Module):
    """3x4 inputs -> 5 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_requests(n: int, seed: int) -> list[tuple[bytes, int, np.ndarray | None]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            body, status = rng.choice(INVALID)
            out.append((body, status, None))
        else:
            rows = rng.randint(1, 4)
            x = np.asarray(
                [[[rng.uniform(-3, 3) for _ in range(4)] for _ in range(3)] for _ in range(rows)], np.float32
            )
            inputs = x[0].tolist() if rows == 1 and rng.random() < 0.5 else x.tolist()
            out.append((b'{"inputs": %s}' % str(inputs).encode(), 200, x))
    return out


async def fire(url: str, requests: list[tuple[bytes, int, Any]], concurrency: int) -> tuple[list[Any], list[float]]:
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(body: bytes) -> Any:
            async with limit:
                start = time.perf_counter()
                try:
                    response = await client.post("/predict", content=body, headers={"content-type": "application/json"})
                except httpx.TransportError as err:
                    return err
                latencies.append(time.perf_counter() - start)
                return response

        return await asyncio.gather(*[one(body) for body, _, _ in requests]), latencies


def problems(responses: list[Any], requests: list[tuple[bytes, int, Any]], model: nn.Module) -> list[str]:
    found = []
    for i, (response, (_, status, x)) in enumerate(zip(responses, requests)):
        if not isinstance(response, httpx.Response):
            found.append(f"request {i}: {response!r}")
        elif response.status_code != status:
            found.append(f"request {i}: HTTP {response.status_code}, expected {status}: {response.text[:200]}")
        elif x is not None:
            got = np.asarray(response.json()["outputs"]).reshape(len(x), 5)
            want = model(torch.from_numpy(x)).detach().numpy()
            if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
                found.append(f"request {i}: wrong outputs")
    return found


def histogram_quantiles(metrics: str, quantiles: tuple[float, ...]) -> list[float]:
    """Upper bounds of the buckets holding ``quantiles`` of /predict's latency histogram."""
    prefix = 'ember_request_duration_seconds_bucket{path="/predict",le="'
    buckets = []
    for line in metrics.splitlines():
        if line.startswith(prefix):
            bound, count = line[len(prefix) :].split('"} ')
            buckets.append((float(bound), float(count)))
    total = buckets[-1][1]
    return [next(bound for bound, count in buckets if count >= q * total) for q in quantiles]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warm-up", type=int, default=500)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = Model().eval()
    directory = Path(tempfile.mkdtemp(prefix="ember-load-"))
    import ember.export

    ember.export.to_exported_program(model, directory / "model.pt2", torch.zeros(1, 3, 4))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ember_cmd = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"
    command = [ember_cmd, "serve", str(directory / "model.pt2"), "--trust-pt2",  # our own file
               "--port", str(port), "--log-level", "warning", "--max-body-bytes", str(BODY_LIMIT)]  # fmt: skip
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    print("ember serve did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)

        warm_up = make_requests(args.warm_up, seed=1)
        responses, _ = asyncio.run(fire(url, warm_up, args.concurrency))
        found = problems(responses, warm_up, model)
        rss_before = rss_mb(server.pid)
        requests = make_requests(args.requests, seed=2)
        start = time.perf_counter()
        responses, latencies = asyncio.run(fire(url, requests, args.concurrency))
        wall = time.perf_counter() - start
        rss_after = rss_mb(server.pid)
        server_quantiles = histogram_quantiles(httpx.get(f"{url}/metrics").text, (0.5, 0.99))
        found += problems(responses, requests, model)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(directory, ignore_errors=True)

    codes: dict[int, int] = {}
    for response in responses:
        if isinstance(response, httpx.Response):
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
    server_errors = sum(n for code, n in codes.items() if code >= 500)
    valid = sum(1 for _, status, _ in requests if status == 200)
    print(f"{args.requests} requests ({valid} valid, {args.requests - valid} invalid), {args.concurrency} concurrent")
    print(f"{args.requests / wall:.0f} req/s, p50 {np.percentile(latencies, 50) * 1000:.1f} ms, "
          f"p99 {np.percentile(latencies, 99) * 1000:.1f} ms; status codes {dict(sorted(codes.items()))}")  # fmt: skip
    print(f"server-side /predict latency (from /metrics, bucket bounds): p50 <= {server_quantiles[0] * 1000:.0f} ms, "
          f"p99 <= {server_quantiles[1] * 1000:.0f} ms; the rest is the client's own queueing (httpx, same 2 cores)")  # fmt: skip
    print(f"server RSS: {rss_before:.1f} MB after warm-up, {rss_after:.1f} MB after the run "
          f"({rss_after - rss_before:+.1f} MB; limit +50 MB)")  # fmt: skip
    failures = found[:10]
    if server_errors:
        failures.append(f"{server_errors} responses were 5xx")
    if rss_after - rss_before >= 50:
        failures.append("RSS grew by 50 MB or more")
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    print("PASS" if not failures else f"FAIL ({len(found)} wrong answers)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
