"""``/health`` latency while four maximum-size ``/predict`` requests are in flight, against an idle baseline.

Used by ``test_serve_large_requests.py``; run it to print the figures (``ember serve`` in its own process
on 127.0.0.1, serving the test classifier as a .pt2)::

    python tests/serve/health_probe.py --body-mib 4
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson

HEADERS = {"content-type": "application/json"}


def max_size_body(limit: int, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """A ``{"inputs": ...}`` body of as many [3, 4] samples (3-decimal numbers) as fit in ``limit`` bytes."""
    rng = np.random.default_rng(seed)

    def build(count: int) -> tuple[bytes, np.ndarray]:
        x = rng.uniform(-3, 3, (count, 3, 4)).round(3)
        return orjson.dumps({"inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY), x

    body, x = build(1000)
    count = int(1000 * limit / len(body))
    while True:
        body, x = build(count)
        if len(body) <= limit:
            return body, x.astype(np.float32)
        count = int(count * limit / len(body)) - 1


@dataclass
class Probe:
    """Latencies in seconds: idle ``baseline`` pings, ``under_load`` pings, and the big requests' outcomes."""

    baseline: list[float] = field(default_factory=list)
    under_load: list[float] = field(default_factory=list)
    responses: list[httpx.Response | Exception | None] = field(default_factory=list)
    request_seconds: list[float] = field(default_factory=list)


def probe(url: str, body: bytes, requests: int = 4, interval: float = 0.02, bound: float = 300.0) -> Probe:
    """Ping ``/health`` idle (20 times), then every ``interval`` s while ``requests`` copies of ``body`` run.

    The caller's garbage collector is off meanwhile: a full collection in this (client) process would
    stop the pinging thread too and count against the server.
    """
    result = Probe(responses=[None] * requests, request_seconds=[0.0] * requests)
    gc.collect()
    gc.disable()
    try:
        _probe(url, body, requests, interval, bound, result)
    finally:
        gc.enable()
    return result


def _probe(url: str, body: bytes, requests: int, interval: float, bound: float, result: Probe) -> None:
    with httpx.Client(base_url=url, timeout=bound) as pinger:

        def ping() -> float:
            start = time.perf_counter()
            assert pinger.get("/health").status_code == 200
            return time.perf_counter() - start

        for _ in range(20):
            result.baseline.append(ping())
            time.sleep(interval)

        def post(index: int) -> None:
            start = time.perf_counter()
            try:
                result.responses[index] = httpx.post(f"{url}/predict", content=body, headers=HEADERS, timeout=bound)
            except httpx.HTTPError as err:
                result.responses[index] = err
            result.request_seconds[index] = time.perf_counter() - start

        threads = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(requests)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + bound
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            result.under_load.append(ping())
            time.sleep(interval)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


def describe(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    slow = sum(1 for v in ms if v > 100)
    return f"p50 {quantile(ms, 0.5):6.1f} ms  p90 {quantile(ms, 0.9):6.1f} ms  max {max(ms):7.1f} ms  ({len(ms)} pings, {slow} over 100 ms)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-mib", type=float, default=4.0, help="max_body_bytes in MiB (the request size)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="ember serve --max-batch-size")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from serving import EmberServe, seeded_classifier

    from ember.serve import create_app

    limit = int(args.body_mib * 2**20)
    body, x = max_size_body(limit)
    options = ["--max-body-bytes", str(limit), "--max-batch-size", str(args.max_batch_size)]
    if "max_samples" in inspect.signature(create_app).parameters:  # what the code under test knows
        options += ["--trust-pt2", "--max-samples", str(len(x))]
    with tempfile.TemporaryDirectory() as directory:
        model = Path(directory) / "clf.pt2"
        seeded_classifier().to_exported_program(model)
        server = EmberServe(str(model), *options, cwd=Path(directory))
        try:
            result = probe(server.url, body)
        finally:
            server.terminate()
    statuses = [getattr(r, "status_code", repr(r)) for r in result.responses]
    print(f"4 requests of {len(body)} bytes ({len(x)} samples each): statuses {statuses}, "
          f"took {', '.join(f'{s:.1f}' for s in result.request_seconds)} s")  # fmt: skip
    print(f"/health idle:        {describe(result.baseline)}")
    print(f"/health under load:  {describe(result.under_load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
