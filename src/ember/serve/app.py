"""``create_app``: the FastAPI application that serves one model with dynamic batching.

Endpoints (:mod:`ember.serve.routes`): ``POST /predict``, ``GET /health``, ``GET /metadata``,
``GET /metrics`` (Prometheus) and the interactive docs at ``/docs`` and ``/redoc``, whose JavaScript
and CSS are served by the app itself (no CDN, so they work offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from ember.optional import require
from ember.serve.backends import Backend, load_backend
from ember.serve.batching import DynamicBatcher
from ember.serve.metrics import MetricsMiddleware, ServerMetrics
from ember.serve.routes import ROUTES, add_predict_route, add_status_routes
from ember.serve.spec import check_batched, output_spec

TASKS = (None, "classification")


def create_app(
    model_or_path: Any,
    *,
    task: str | None = None,
    model_class: type | None = None,
    input_sample: Any = None,
    name: str | None = None,
    version: str = "1",
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_queue_size: int = 1024,
    max_body_bytes: int = 8 * 1024 * 1024,
    allow_nan: bool = False,
    device: str = "cpu",
    num_threads: int | None = None,
) -> Any:
    """Build the FastAPI app serving ``model_or_path``; run it with uvicorn or :func:`ember.serve.serve`.

    Args:
        model_or_path: an ``nn.Module`` (e.g. an ``ember.Module``; it is put in eval mode), a
            ``torch.export.ExportedProgram``, or the path of an exported ``.onnx`` (run by ONNX
            Runtime), ``.pt2`` or TorchScript (``.pt``/``.ts``) file, or of a checkpoint (with ``model_class``).
            Serve only files you trust: ``.pt2`` and TorchScript archives are programs.
        task: ``"classification"`` adds ``predictions`` (argmax) and ``probabilities`` (softmax of the
            outputs, taken as logits) to each answer; ``None`` returns the outputs only.
        model_class: the ``ember.Module`` subclass that rebuilds a checkpoint (its
            ``load_from_checkpoint``). A class named inside a file is never imported.
        input_sample: an example batch fixing the expected per-sample shape and dtype when the model
            carries none (a module without ``example_input_array``, a foreign TorchScript file).
        name: the model name in ``/metadata`` and ``/metrics``; None takes the class name or file stem.
        version: the model version reported by ``/metadata``.
        max_batch_size: the most samples in one forward pass.
        max_wait_ms: how long the oldest waiting request may wait for others to fill its batch.
        max_queue_size: the most requests waiting for the model; beyond it requests get 503.
        max_body_bytes: the largest accepted request body (larger: 413).
        allow_nan: accept NaN and infinity in inputs (refused with 422 by default).
        device: where torch models run (``"cpu"``, ``"cuda"``, ...).
        num_threads: CPU threads one forward pass may use (``torch.set_num_threads``, which is
            process-wide, and ONNX Runtime's ``intra_op_num_threads``); None leaves them as they are.
            On a small machine leave a core to HTTP: ``ember serve`` uses one fewer than the CPUs.

    Example::

        app = create_app("model.pt2", task="classification", max_batch_size=64)
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    _check_options(task, max_batch_size, max_wait_ms, max_queue_size, max_body_bytes, num_threads)
    require("fastapi", "serve")
    fastapi_offline = require("fastapi_offline", "serve")
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)
    backend = load_backend(
        model_or_path, model_class=model_class, input_sample=input_sample, device=device, num_threads=num_threads
    )
    model_name = name or backend.name
    metadata = _model_metadata(backend, model_name, version, task, max_batch_size, max_wait_ms)
    metrics = ServerMetrics({"name": model_name, "version": version, "format": backend.format})
    batcher = _batcher(backend, metrics, max_batch_size, max_wait_ms, max_queue_size)
    spec = backend.input
    app = fastapi_offline.FastAPIOffline(
        title=f"Ember: {model_name}",
        version=version,
        description=f"Serves {model_name} ({backend.format}). Expects {spec.describe() if spec else 'a batch of samples'}.",
        lifespan=_lifespan(batcher),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=ROUTES)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.metadata = metadata
    add_predict_route(app, batcher, spec, task, max_body_bytes, allow_nan)
    add_status_routes(app, batcher, metrics, metadata)
    return app


def _check_options(
    task: Any, max_batch_size: Any, max_wait_ms: Any, max_queue_size: Any, max_body_bytes: Any, num_threads: Any
) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose None or 'classification'")
    for label, value in (
        ("max_batch_size", max_batch_size),
        ("max_queue_size", max_queue_size),
        ("max_body_bytes", max_body_bytes),
        ("num_threads", 1 if num_threads is None else num_threads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label}={value!r}; expected an integer >= 1")
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not 0 <= max_wait_ms < math.inf:
        raise ValueError(f"max_wait_ms={max_wait_ms!r}; expected a number of milliseconds >= 0")


def _warm_up(backend: Backend) -> Any:
    """Run the model once on zeros (loads lazy state, fails fast on a broken model); the outputs."""
    spec = backend.input
    if spec is None or not spec.complete:
        return None
    rows = spec.batch or 2
    outputs = backend.predict(np.zeros((rows, *spec.shape), dtype=spec.dtype))
    check_batched(outputs, rows)
    return outputs


def _model_metadata(
    backend: Backend, name: str, version: str, task: str | None, max_batch_size: int, max_wait_ms: float
) -> dict[str, Any]:
    """What ``/metadata`` reports; runs the model once (:func:`_warm_up`) to learn its outputs."""
    outputs = _warm_up(backend)
    if task == "classification" and outputs is not None and not isinstance(outputs, np.ndarray):
        raise ValueError("task='classification' needs a model with one output tensor (the logits)")
    return {
        "name": name,
        "version": version,
        "format": backend.format,
        "task": task,
        "input": backend.input.to_json() if backend.input else None,
        "output": output_spec(outputs) if outputs is not None else None,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
    }


def _batcher(
    backend: Backend, metrics: ServerMetrics, max_batch_size: int, max_wait_ms: float, max_queue_size: int
) -> DynamicBatcher:
    """The batcher feeding ``backend``; every forward pass and the queue length go to ``metrics``."""
    spec = backend.input
    batcher = DynamicBatcher(
        backend.predict,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_size=max_queue_size,
        fixed_batch=spec.batch if spec else None,
        on_batch=metrics.observe_batch,
    )
    metrics.queue_size = lambda: batcher.queue_size
    return batcher


def _lifespan(batcher: DynamicBatcher) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """Start the batcher's worker with the server; drain its queue when the server stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        # uvicorn has already let in-flight requests finish; this drains anything still queued
        # (in a thread, so the loop can still deliver those last answers).
        await asyncio.to_thread(batcher.stop)

    return lifespan


def default_num_threads() -> int:
    """Threads for the model in a dedicated server: one fewer than the CPUs (one core for HTTP), at least 1."""
    return max(1, (os.cpu_count() or 1) - 1)


def serve(
    model_or_path: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    timeout_graceful_shutdown: float | None = 30.0,
    **app_options: Any,
) -> None:
    """Serve ``model_or_path`` with uvicorn until SIGINT/SIGTERM; in-flight requests finish first.

    ``app_options`` go to :func:`create_app` (``task``, ``max_batch_size``, ``max_wait_ms``, ...);
    ``num_threads`` defaults to :func:`default_num_threads` here, since the process is the server's.
    """
    uvicorn = require("uvicorn", "serve")
    app_options.setdefault("num_threads", default_num_threads())
    app = create_app(model_or_path, **app_options)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
