"""Serving throughput: a naive FastAPI endpoint vs ``ember serve`` with dynamic batching.

(a) naive: the way tutorials write it — a pydantic request model and a ``def`` endpoint that runs
    the model once per request (FastAPI runs it in its thread pool); also shown with torch's
    thread count set like Ember's ("naive-tuned"), so the gain is not just thread tuning;
(b) ember: ``ember.serve.create_app`` on the same model as ``ember serve`` runs it
    (max_batch_size=32, max_wait_ms=5, one CPU fewer than the machine for the model).

Every server runs under uvicorn in its own process, side by side; the load comes from this process
over keep-alive HTTP/1.1 connections with a minimal asyncio client (little CPU on a small
machine), alternating between servers. One run: requests per second, p50 and p99 latency at 1 and
32 concurrent clients. The model is a small CNN with a large fully connected head (VGG-style) on
1x64x64 images, whose single-sample forward takes >= ~10 ms on 2 CPU cores; the script first
prints how much faster per sample the model itself runs in batches of 32 (what batching can gain).

    .venv/bin/python benchmarks/serve.py                 # 1,000 requests at 32 clients, 250 at 1
    .venv/bin/python benchmarks/serve.py --requests 2000
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
    """A strided conv stem, a conv block and a 4096-wide two-layer head (VGG-style): ~34M parameters.

    Alone, one sample takes >= ~10 ms on 2 CPU cores, most of it reading the head's weights; a batch
    reads them once for all its samples, which is what dynamic batching exploits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
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

    return app


def ember_app() -> Any:
    from ember.serve import create_app
    from ember.serve.app import default_num_threads

    # What `ember serve` does: the model gets one CPU fewer than the machine (one left for HTTP).
    return create_app(build_model(), max_batch_size=32, max_wait_ms=5, num_threads=default_num_threads())


SERVERS = {
    "naive": "naive FastAPI, torch's default threads (the tutorial way)",
    "naive-tuned": "naive FastAPI, torch threads = ember's setting",
    "ember": "ember serve: dynamic batching",
}


def run_server(kind: str, port: int) -> None:
    import uvicorn

    from ember.serve.app import default_num_threads

    if kind == "naive-tuned":
        torch.set_num_threads(default_num_threads())
    app = ember_app() if kind == "ember" else naive_app()
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
    parser.add_argument("--role", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests per run at 32 clients (1 client: a quarter)"
    )
    args = parser.parse_args()
    if args.role:
        run_server(args.role, args.port)
        return

    model = build_model()
    load_avg = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load_avg:.2f} before the run")
    threads = torch.get_num_threads()
    for n in sorted({threads, 1}):
        torch.set_num_threads(n)
        single, batched = model_throughput(model, 1), model_throughput(model, 32)
        print(f"model alone, {n} thread(s): batch 1 {single:.0f} samples/s ({1000 / single:.1f} ms each), "
              f"batch 32 {batched:.0f} samples/s ({batched / single:.1f}x)")  # fmt: skip
    torch.set_num_threads(threads)

    rng = np.random.default_rng(0)
    samples = [rng.random(SHAPE, dtype=np.float32).round(4) for _ in range(32)]
    bodies = [json.dumps({"inputs": s.tolist()}).encode() for s in samples]
    with torch.inference_mode():
        expected = model(torch.from_numpy(np.stack(samples))).numpy()
    print(f"request body: {len(bodies[0]) / 1024:.0f} KiB of JSON (one 1x64x64 image)\n")

    # All servers run side by side and the measurements alternate, so that a change in the
    # machine's background load hits them alike.
    servers = {kind: start_server(kind) for kind in SERVERS}
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    try:
        for _, port in servers.values():
            asyncio.run(load(port, bodies, 64, 8))  # warm-up
        for clients in (1, 32):
            total = args.requests if clients > 1 else max(args.requests // 4, 50)
            for kind, (_, port) in servers.items():
                before = _metrics(port) if kind == "ember" else None
                latencies, wall, answers = asyncio.run(load(port, bodies, total, clients))
                for answer, want in zip(answers, expected):
                    if answer:
                        np.testing.assert_allclose(json.loads(answer)["outputs"], want, rtol=1e-3, atol=1e-4)
                rps, p50, p99 = total / wall, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
                results[kind, clients] = (rps, p50, p99)
                line = f"{kind:>11} {clients:>2} clients: {rps:6.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                if before is not None:
                    after = _metrics(port)
                    samples_seen, forwards = after["sum"] - before["sum"], after["count"] - before["count"]
                    line += f"  ({samples_seen / max(forwards, 1):.1f} samples/forward)"
                print(f"{line}  [{total} requests]", flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)

    print()
    for kind, description in SERVERS.items():
        print(f"{kind:>11}: {description}")
    e_rps, _, e_p99 = results["ember", 32]
    for baseline in ("naive", "naive-tuned"):
        b_rps, _, b_p99 = results[baseline, 32]
        verdict = "no worse" if e_p99 <= b_p99 else "WORSE"
        print(f"32 clients, ember vs {baseline}: {e_rps / b_rps:.2f}x req/s (target >= 3x), "
              f"p99 {e_p99:.0f} ms vs {b_p99:.0f} ms ({verdict})")  # fmt: skip
    print(f" 1 client,  ember vs naive: {results['ember', 1][0] / results['naive', 1][0]:.2f}x req/s")
    print(f"load average after the run {os.getloadavg()[0]:.2f}")


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ember_batch_size_"))
    return {"sum": float(values["ember_batch_size_sum"]), "count": float(values["ember_batch_size_count"])}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
