"""Helpers for the serving tests: a real uvicorn server on 127.0.0.1, tiny models, free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.serve import server_config

HERE = Path(__file__).resolve().parent
EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"


class Classifier(ember.Module):
    """3x4 inputs -> 5 logits; a seeded, deterministic tiny model."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 5))
        self.example_input_array = torch.zeros(1, 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recording(nn.Module):
    """Wraps a model, records every batch size it sees, and can be slowed down or held at a gate.

    With ``gated=True`` every forward after the first (the startup warm-up) waits for ``gate``.
    """

    def __init__(self, model: nn.Module, delay: float = 0.0, gated: bool = False) -> None:
        super().__init__()
        self.model = model
        self.delay = delay
        self.gated = gated
        self.batch_sizes: list[int] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.example_input_array = getattr(model, "example_input_array", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(x.shape[0]))
        if len(self.batch_sizes) > 1:
            self.started.set()
            if self.gated and not self.gate.wait(30):
                raise TimeoutError("the test never opened the gate")
        if self.delay:
            time.sleep(self.delay)
        return self.model(x)


def trained_checkpoint(directory: Path, seed: int) -> tuple[Path, Classifier]:
    """A small Classifier trained for one epoch and its checkpoint ``directory / "clf.ckpt"``."""
    torch.manual_seed(seed)
    model = Classifier(hidden=8)
    data = DataLoader(TensorDataset(torch.randn(16, 3, 4), torch.randint(0, 5, (16,))), batch_size=8)
    trainer = ember.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=directory,
    )  # fmt: skip
    trainer.fit(model, data)
    trainer.save_checkpoint(directory / "clf.ckpt")
    return directory / "clf.ckpt", model


def seeded_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier().eval()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """Runs an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; ``url`` is its base URL.

    The configuration is ``ember serve``'s (``server_config``: connection limits and timeouts, which
    ``limits`` overrides). Leaving the ``with`` block asks uvicorn to shut down gracefully and waits for it.
    """

    def __init__(self, app: Any, timeout: float = 20.0, **limits: Any) -> None:
        self.app = app
        self.timeout = timeout
        self.server = uvicorn.Server(server_config(app, log_level="warning", lifespan="on", **limits))
        self.thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> LiveServer:
        # proto=IPPROTO_TCP, as asyncio's own sockets have: only then does it set TCP_NODELAY on the
        # accepted connections (without it, Nagle + delayed ACKs add ~40 ms to every response).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(self.timeout)
        self._sock.close()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0, **kwargs)


class EmberServe:
    """``ember serve ARGS`` (the console script, in its own process) on a free loopback port; waits for /health.

    Its output goes to a file (``output()``), so that a chatty server never blocks on a full pipe.
    """

    def __init__(self, *args: str, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        command = [EMBER, "serve", *args, "--port", str(self.port), "--log-level", "warning"]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ember serve exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("ember serve did not become healthy")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (comments skipped)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
