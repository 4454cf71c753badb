"""The model server's endpoints: ``POST /predict``, ``GET /health``, ``/metadata`` and ``/metrics``.

:func:`~ember.serve.app.create_app` builds the backend, the batcher and the metrics, then adds these
routes to its FastAPI app. ``/predict`` validates a request (:mod:`ember.serve.validation`), queues it
for the next batch (:mod:`ember.serve.batching`) and answers with its own rows as JSON.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
# (``request: Request``), and Request is imported inside the functions that define the endpoints
# so that fastapi stays optional.
import asyncio
import json
import logging
import math
from concurrent.futures import Future
from typing import Any

import numpy as np

from ember.serve.batching import DynamicBatcher, QueueFull, ShuttingDown
from ember.serve.metrics import ServerMetrics
from ember.serve.spec import TensorSpec
from ember.serve.validation import InvalidInput, parse_inputs, read_body, to_batch
from ember.tree import tree_map

log = logging.getLogger("ember.serve")

#: Every path the app answers; the metrics count any other path as ``other``.
ROUTES = ("/predict", "/health", "/metadata", "/metrics", "/docs", "/redoc", "/openapi.json")


def add_predict_route(
    app: Any, batcher: DynamicBatcher, spec: TensorSpec | None, task: str | None, max_body_bytes: int, allow_nan: bool
) -> None:
    """``POST /predict``: one sample or a batch in, the model's outputs (and, for a task, its answers) out."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response

    def error(status: int, detail: str) -> Response:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.post("/predict", openapi_extra=_predict_docs(spec, task), response_model=None)
    async def predict(request: Request) -> Response:
        """Run the model on one sample or a batch: ``{"inputs": [...]}`` -> ``{"outputs": ...}``."""
        try:
            future, single = await _submit(request, batcher, spec, max_body_bytes, allow_nan)
        except InvalidInput as err:
            return error(err.status_code, err.detail)
        except (QueueFull, ShuttingDown) as err:
            return error(503, f"the server cannot take this request now: {err}")
        try:
            result = await asyncio.wrap_future(future)
        except Exception as err:
            return error(*_inference_failure(err, spec))
        try:
            answer = _answer(result, single, task)
        except ValueError as err:
            log.exception("could not format the model's output")
            return error(500, str(err))
        return Response(json.dumps(answer), media_type="application/json")


def add_status_routes(app: Any, batcher: DynamicBatcher, metrics: ServerMetrics, metadata: dict[str, Any]) -> None:
    """``GET /health``, ``GET /metadata`` and ``GET /metrics``."""
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

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


async def _submit(
    request: Any, batcher: DynamicBatcher, spec: TensorSpec | None, max_body_bytes: int, allow_nan: bool
) -> tuple[Future, bool]:
    """Read and check the request, then queue its batch: the future of its rows, and whether it is one sample."""
    with batcher.arriving():
        body = await read_body(request, max_body_bytes)
        inputs = parse_inputs(body)
        batch, single = to_batch(inputs, spec, allow_nan, check_bools=b"true" in body or b"false" in body)
        return batcher.submit(batch), single


def _inference_failure(err: Exception, spec: TensorSpec | None) -> tuple[int, str]:
    """The status and detail for a request the model failed on (called while ``err`` is handled)."""
    if spec is None or not spec.complete:
        # The input matched everything known about the model, yet the model refused it.
        return 422, f"the model could not process this input: {err}"
    log.exception("inference failed on a valid input")
    return 500, f"inference failed: {type(err).__name__}"


def _answer(result: Any, single: bool, task: str | None) -> dict[str, Any]:
    """The JSON answer to a request: its outputs, plus predictions and probabilities for classification."""
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
    """The output tree as lists (``json`` writes tuples as arrays); for a single sample, its one row."""
    return tree_map(lambda array: _json_array(array[0] if single else array), tree)


def _json_array(array: np.ndarray) -> Any:
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
