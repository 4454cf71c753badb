"""Serving throughput: a naive FastAPI endpoint vs ``ember serve`` with dynamic batching.

(a) naive: the way tutorials write it — a pydantic request model and a ``def`` endpoint that runs
    the model once per request (FastAPI runs it in its thread pool);
(b) ember: ``ember.serve.create_app`` on the same model (max_batch_size=32, max_wait_ms=5).

Both run under uvicorn in their own process; the load comes from this process over keep-alive
HTTP/1.1 connections with a minimal asyncio client (so the client costs as little CPU as possible
on a small machine). Each configuration is measured once: requests per second, p50 and p99 latency,
at 1 and 32 concurrent clients. The model is a small CNN with a large fully connected head
(VGG-style) on 1x64x64 images, whose single-sample forward takes >= ~10 ms on 2 CPU cores.

    .venv/bin/python benchmarks/serve.py                 # default request counts
    .venv/bin/python benchmarks/serve.py --requests 2000 # more requests at 32 clients
"""

# No ``from __future__ import annotations``: FastAPI must see the naive endpoint's real annotations.
import argparse
import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SHAPE = (1, 64, 64)


class BenchCNN(nn.Module):
    """Three conv blocks and a 4096-wide two-layer head: ~34M parameters, ~8-15 ms per sample alone."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 8 * 8, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10)
        )
        self.example_input_array = torch.zeros(1, *SHAPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model() -> BenchCNN:
    torch.manual_seed(0)
    return BenchCNN().eval()


# ------------------------------------------------------------------ the two servers


def naive_app() -> Any:
    from fastapi import FastAPI
    from pydantic import BaseModel

    model = build_model()
    app = FastAPI()

    class PredictRequest(BaseModel):
        inputs: list[list[list[float]]]

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        x = torch.tensor(request.inputs).unsqueeze(0)
        with torch.no_grad():
            y = model(x)
        return {"outputs": y[0].tolist()}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def ember_app() -> Any:
    from ember.serve import create_app

    return create_app(build_model(), max_batch_size=32, max_wait_ms=5)


def run_server(kind: str, port: int) -> None:
    import uvicorn

    app = naive_app() if kind == "naive" else ember_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ------------------------------------------------------------------ the client


async def _request(reader: Any, writer: Any, body: bytes) -> tuple[int, bytes]:
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    writer.write(head % len(body) + body)
    await writer.drain()
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", header).group(1))
    return status, await reader.readexactly(length)


async def load(port: int, bodies: list[bytes], total: int, clients: int) -> tuple[list[float], float, list[bytes]]:
    """``total`` requests over ``clients`` keep-alive connections; latencies, wall time, first answers."""
    counter = itertools.count()
    latencies: list[float] = []
    answers: list[bytes] = [b""] * len(bodies)

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (i := next(counter)) < total:
                start = time.perf_counter()
                status, payload = await _request(reader, writer, bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
                if i < len(bodies):
                    answers[i] = payload
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    return latencies, time.perf_counter() - start, answers


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start_server(kind: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, __file__, "--role", kind, "--port", str(port)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} server exited") from None
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


def model_throughput(model: nn.Module, batch: int, seconds: float = 3.0) -> float:
    x = torch.randn(batch, *SHAPE)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            runs += 1
    return runs * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["naive", "ember"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests per run at 32 clients (1 client: a quarter)"
    )
    args = parser.parse_args()
    if args.role:
        run_server(args.role, args.port)
        return

    model = build_model()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.2f}"
    )
    single, batched = model_throughput(model, 1), model_throughput(model, 32)
    print(f"model alone: batch 1 {single:.0f} samples/s ({1000 / single:.1f} ms each), batch 32 {batched:.0f} samples/s "
          f"({batched / single:.1f}x)")  # fmt: skip

    rng = np.random.default_rng(0)
    samples = [rng.random(SHAPE, dtype=np.float32).round(4) for _ in range(32)]
    bodies = [json.dumps({"inputs": s.tolist()}).encode() for s in samples]
    with torch.inference_mode():
        expected = model(torch.from_numpy(np.stack(samples))).numpy()
    print(f"request body: {len(bodies[0]) / 1024:.0f} KiB of JSON (one 1x64x64 image)\n")

    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    for kind in ("naive", "ember"):
        process, port = start_server(kind)
        try:
            asyncio.run(load(port, bodies, 64, 8))  # warm-up
            for clients in (1, 32):
                total = args.requests if clients > 1 else max(args.requests // 4, 50)
                latencies, wall, answers = asyncio.run(load(port, bodies, total, clients))
                for answer, want in zip(answers, expected):
                    if answer:
                        np.testing.assert_allclose(json.loads(answer)["outputs"], want, rtol=1e-3, atol=1e-4)
                results[kind, clients] = (
                    total / wall,
                    percentile(latencies, 50) * 1000,
                    percentile(latencies, 99) * 1000,
                )
                rps, p50, p99 = results[kind, clients]
                print(
                    f"{kind:>5} {clients:>2} clients: {rps:7.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({total} requests)"
                )
            if kind == "ember":
                metrics = _metrics(port)
                print(
                    f"      ember mean batch size: {metrics['sum'] / max(metrics['count'], 1):.1f} samples per forward"
                )
        finally:
            process.terminate()
            process.wait(30)

    (n_rps, _, n_p99), (e_rps, _, e_p99) = results["naive", 32], results["ember", 32]
    print(f"\nat 32 clients: ember / naive = {e_rps / n_rps:.2f}x requests per second (target >= 3x); "
          f"p99 {e_p99:.0f} ms vs {n_p99:.0f} ms ({'no worse' if e_p99 <= n_p99 else 'WORSE'})")  # fmt: skip
    print(f"at 1 client:   ember / naive = {results['ember', 1][0] / results['naive', 1][0]:.2f}x")


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ember_batch_size_"))
    return {"sum": float(values["ember_batch_size_sum"]), "count": float(values["ember_batch_size_count"])}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
