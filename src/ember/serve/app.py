"""``create_app``: the FastAPI application that serves one model with dynamic batching.

Endpoints: ``POST /predict``, ``GET /health``, ``GET /metadata``, ``GET /metrics`` (Prometheus) and
the interactive docs at ``/docs`` and ``/redoc``, whose JavaScript and CSS are served by the app
itself (no CDN, so they work offline).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
# (``request: Request``), and Request is imported inside create_app so that fastapi stays optional.
import asyncio
import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ember.optional import require
from ember.serve.backends import load_backend
from ember.serve.batching import DynamicBatcher, QueueFull, ShuttingDown
from ember.serve.metrics import MetricsMiddleware, ServerMetrics
from ember.serve.spec import check_batched, output_spec
from ember.serve.validation import InvalidInput, parse_inputs, to_batch

log = logging.getLogger("ember.serve")

TASKS = (None, "classification")
ROUTES = ("/predict", "/health", "/metadata", "/metrics", "/docs", "/redoc", "/openapi.json")


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
    from fastapi import Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)
    backend = load_backend(
        model_or_path, model_class=model_class, input_sample=input_sample, device=device, num_threads=num_threads
    )
    model_name = name or backend.name
    outputs = _warm_up(backend)
    if task == "classification" and outputs is not None and not isinstance(outputs, np.ndarray):
        raise ValueError("task='classification' needs a model with one output tensor (the logits)")
    metadata = {
        "name": model_name,
        "version": version,
        "format": backend.format,
        "task": task,
        "input": backend.input.to_json() if backend.input else None,
        "output": output_spec(outputs) if outputs is not None else None,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
    }
    spec = backend.input
    metrics = ServerMetrics({"name": model_name, "version": version, "format": backend.format})
    batcher = DynamicBatcher(
        backend.predict,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_size=max_queue_size,
        fixed_batch=spec.batch if spec else None,
        on_batch=metrics.observe_batch,
    )
    metrics.queue_size = lambda: batcher.queue_size

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        # uvicorn has already let in-flight requests finish; this drains anything still queued
        # (in a thread, so the loop can still deliver those last answers).
        await asyncio.to_thread(batcher.stop)

    app = fastapi_offline.FastAPIOffline(
        title=f"Ember: {model_name}",
        version=version,
        description=f"Serves {model_name} ({backend.format}). Expects {spec.describe() if spec else 'a batch of samples'}.",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=ROUTES)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.metadata = metadata

    def error(status: int, detail: str) -> Response:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.post("/predict", openapi_extra=_predict_docs(spec, task), response_model=None)
    async def predict(request: Request) -> Response:
        """Run the model on one sample or a batch: ``{"inputs": [...]}`` -> ``{"outputs": ...}``."""
        try:
            with batcher.arriving():
                body = await _read_body(request, max_body_bytes)
                inputs = parse_inputs(body)
                batch, single = to_batch(inputs, spec, allow_nan, check_bools=b"true" in body or b"false" in body)
                future = batcher.submit(batch)
        except InvalidInput as err:
            return error(err.status_code, err.detail)
        except (QueueFull, ShuttingDown) as err:
            return error(503, f"the server cannot take this request now: {err}")
        try:
            result = await asyncio.wrap_future(future)
        except Exception as err:
            if spec is None or not spec.complete:
                # The input matched everything known about the model, yet the model refused it.
                return error(422, f"the model could not process this input: {err}")
            log.exception("inference failed on a valid input")
            return error(500, f"inference failed: {type(err).__name__}")
        try:
            answer = _answer(result, single, task)
        except ValueError as err:
            log.exception("could not format the model's output")
            return error(500, str(err))
        return Response(json.dumps(answer), media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        """200 while the server takes requests; 503 once it is shutting down."""
        if batcher.accepting:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """Model name, version, format, input and output shapes and dtypes (``null`` = any size)."""
        return metadata

    @app.get("/metrics")
    async def get_metrics() -> Response:
        """Prometheus metrics: requests by status, latency, batch sizes, inference time."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

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


def _warm_up(backend: Any) -> Any:
    """Run the model once on zeros (loads lazy state, fails fast on a broken model); the outputs."""
    spec = backend.input
    if spec is None or not spec.complete:
        return None
    rows = spec.batch or 2
    outputs = backend.predict(np.zeros((rows, *spec.shape), dtype=spec.dtype))
    check_batched(outputs, rows)
    return outputs


async def _read_body(request: Any, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInput(400, f"invalid Content-Length header {length!r}")
        if int(length) > limit:
            raise InvalidInput(413, f"the request body has {int(length)} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidInput(413, f"the request body exceeds {limit} bytes, the most this server accepts")
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(result: Any, single: bool, task: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"outputs": _jsonable(result, single)}
    if task == "classification":
        if not isinstance(result, np.ndarray):
            raise ValueError("task='classification' needs a model with one output tensor (the logits)")
        logits = result.astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        answer["predictions"] = _jsonable(probabilities.argmax(axis=-1), single)
        answer["probabilities"] = _jsonable(probabilities, single)
    return answer


def _jsonable(tree: Any, single: bool) -> Any:
    if isinstance(tree, dict):
        return {k: _jsonable(v, single) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return [_jsonable(v, single) for v in tree]
    array = tree[0] if single else tree
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        # JSON has no NaN/Infinity: non-finite outputs become null.
        array = np.where(np.isfinite(array), array, None)
    return array.tolist()


def _predict_docs(spec: Any, task: str | None) -> dict[str, Any]:
    expected = spec.describe() if spec is not None else "a batch (a list) of samples"
    example: Any = [[0.0]]
    if spec is not None and spec.complete and math.prod(spec.shape) <= 16:
        example = np.zeros(spec.shape, dtype=spec.dtype).tolist()
    outputs_doc = "the model's outputs for the sample, or a list of them for a batch"
    if task == "classification":
        outputs_doc += "; plus predictions (class indices) and probabilities (softmax)"
    schema = {
        "type": "object",
        "required": ["inputs"],
        "properties": {"inputs": {"description": f"Nested lists of numbers: {expected}."}},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": {"inputs": example}}},
        },
        "responses": {
            "200": {"description": outputs_doc},
            "413": {"description": "The body is larger than max_body_bytes."},
            "422": {
                "description": "The inputs do not match what the model expects; the detail says what was expected."
            },
            "503": {"description": "The server is shutting down or its queue is full."},
        },
    }


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
