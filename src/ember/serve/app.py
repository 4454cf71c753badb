"""``create_app``: the FastAPI application that serves one model with dynamic batching; ``serve`` runs it.

Endpoints (:mod:`ember.serve.routes`): ``POST /predict``, ``GET /health``, ``GET /metadata``,
``GET /metrics`` (Prometheus) and the interactive docs at ``/docs`` and ``/redoc``, whose JavaScript
and CSS are served by the app itself (no CDN, so they work offline). ``serve`` adds the connection
limits of :mod:`ember.serve.connections` (header, body and keep-alive timeouts, a connection limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from ember.optional import require
from ember.serve.backends import Backend, load_backend
from ember.serve.batching import DynamicBatcher
from ember.serve.connections import ConnectionLimits, server_config
from ember.serve.metrics import MetricsMiddleware, ServerMetrics
from ember.serve.routes import ROUTES, PredictOptions, add_predict_route, add_status_routes
from ember.serve.spec import check_batched, output_spec
from ember.serve.workers import JsonWorkers

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
    max_samples: int = 4096,
    allow_nan: bool = False,
    device: str = "cpu",
    num_threads: int | None = None,
    json_workers: int = 1,
    trusted: bool = False,
) -> Any:
    """Build the FastAPI app serving ``model_or_path``; run it with uvicorn or :func:`ember.serve.serve`.

    Args:
        model_or_path: an ``nn.Module`` (e.g. an ``ember.Module``; it is put in eval mode), a
            ``torch.export.ExportedProgram``, or the path of an exported ``.onnx`` (run by ONNX
            Runtime), ``.pt2`` or TorchScript (``.pt``/``.ts``) file, or of a checkpoint (with ``model_class``).
            Safe for files from others: ONNX and Ember checkpoints, which load as data. ``.pt2`` and
            TorchScript archives are programs: a ``.pt2`` is loaded only with ``trusted=True``.
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
        max_samples: the most samples in one request (more: 413, before any array is built).
        allow_nan: accept NaN and infinity in inputs (refused with 422 by default).
        device: where torch models run (``"cpu"``, ``"cuda"``, ...).
        num_threads: CPU threads one forward pass may use (``torch.set_num_threads``, which is
            process-wide, and ONNX Runtime's ``intra_op_num_threads``); None leaves them as they are.
            On a small machine leave a core to HTTP: ``ember serve`` uses one fewer than the CPUs.
        json_workers: processes that parse large request bodies and write large answers, so that
            they never hold up the event loop (``/health`` and every other request); started with the
            first large request. 0 does that work in the server process.
        trusted: load a ``.pt2`` archive, which runs any code it contains (``torch.export.load``
            unpickles parts of it with ``weights_only=False``). Only for files you trust.

    Example::

        app = create_app("model.pt2", task="classification", max_batch_size=64)
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    _check_options(task, max_batch_size, max_wait_ms, max_queue_size, max_body_bytes, max_samples, num_threads)
    if isinstance(json_workers, bool) or not isinstance(json_workers, int) or json_workers < 0:
        raise ValueError(f"json_workers={json_workers!r}; expected an integer >= 0")
    require("fastapi", "serve")
    fastapi_offline = require("fastapi_offline", "serve")
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)
    backend = load_backend(
        model_or_path,
        model_class=model_class,
        input_sample=input_sample,
        device=device,
        num_threads=num_threads,
        trusted=trusted,
    )
    model_name = name or backend.name
    metadata = _model_metadata(backend, model_name, version, task, max_batch_size, max_wait_ms)
    metadata["max_samples"] = max_samples
    metrics = ServerMetrics({"name": model_name, "version": version, "format": backend.format})
    batcher = _batcher(backend, metrics, max_batch_size, max_wait_ms, max_queue_size)
    spec = backend.input
    workers = JsonWorkers(json_workers)
    app = fastapi_offline.FastAPIOffline(
        title=f"Ember: {model_name}",
        version=version,
        description=f"Serves {model_name} ({backend.format}). Expects {spec.describe() if spec else 'a batch of samples'}.",
        lifespan=_lifespan(batcher, workers),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=ROUTES)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.metadata = metadata
    app.state.json_workers = workers
    add_predict_route(app, batcher, workers, PredictOptions(spec, task, max_body_bytes, max_samples, allow_nan))
    add_status_routes(app, batcher, metrics, metadata)
    return app


def _check_options(
    task: Any,
    max_batch_size: Any,
    max_wait_ms: Any,
    max_queue_size: Any,
    max_body_bytes: Any,
    max_samples: Any,
    num_threads: Any,
) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose None or 'classification'")
    for label, value in (
        ("max_batch_size", max_batch_size),
        ("max_queue_size", max_queue_size),
        ("max_body_bytes", max_body_bytes),
        ("max_samples", max_samples),
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


def _lifespan(
    batcher: DynamicBatcher, json_workers: JsonWorkers
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """Start the batcher's worker with the server; drain its queue and stop the JSON workers when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        # uvicorn has already let in-flight requests finish; this drains anything still queued
        # (in a thread, so the loop can still deliver those last answers).
        await asyncio.to_thread(batcher.stop)
        await asyncio.to_thread(json_workers.close)

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
    timeout_keep_alive: float = 5.0,
    timeout_headers: float = 10.0,
    timeout_body: float = 60.0,
    max_connections: int = 512,
    **app_options: Any,
) -> None:
    """Serve ``model_or_path`` with uvicorn until SIGINT/SIGTERM; in-flight requests finish first.

    ``host`` and ``port`` are checked before the model loads. The connection limits
    (:mod:`ember.serve.connections`): ``timeout_keep_alive`` (an idle connection between requests),
    ``timeout_headers`` (from a connection's opening or a request's first byte to its complete headers),
    ``timeout_body`` (from the headers to the complete body) in seconds, and ``max_connections`` open at
    once. ``app_options`` go to :func:`create_app` (``task``, ``max_batch_size``, ``max_samples``,
    ``trusted``, ...). Since the process is the server's, ``num_threads`` defaults to
    :func:`default_num_threads` here, and what is loaded at startup (libraries, the model) is moved out of
    the garbage collector's reach (``gc.freeze``): a full collection would otherwise scan it all, stopping
    every request, ``/health`` included, for 0.1-0.7 s. An embedding application can do the same.
    """
    uvicorn = require("uvicorn", "serve")
    check_address(host, port)
    ConnectionLimits(timeout_keep_alive, timeout_headers, timeout_body, max_connections)  # checked before loading
    app_options.setdefault("num_threads", default_num_threads())
    app = create_app(model_or_path, **app_options)
    gc.collect()
    gc.freeze()
    config = server_config(
        app,
        host=host,
        port=port,
        timeout_keep_alive=timeout_keep_alive,
        timeout_headers=timeout_headers,
        timeout_body=timeout_body,
        max_connections=max_connections,
        log_level=log_level,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    uvicorn.Server(config).run()


def check_address(host: str, port: int) -> None:
    """Raise ``ValueError`` unless ``port`` is a port number and ``host`` resolves to an address to listen on."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r}; expected a port number from 0 to 65535 (0: any free port)")
    try:
        # "" is every interface for uvicorn (asyncio), as None is for getaddrinfo
        socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ValueError(
            f"host={host!r} cannot be resolved ({reason}); give an address of this machine, "
            "e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
