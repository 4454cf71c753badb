"""The model server's endpoints: ``POST /predict``, ``GET /health``, ``/metadata`` and ``/metrics``.

:func:`~ember.serve.app.create_app` builds the backend, the batcher and the metrics, then adds these
routes to its FastAPI app. ``/predict`` takes ``application/json`` only (415 otherwise), validates the
request (:mod:`ember.serve.validation`; large bodies are parsed in worker processes, :mod:`ember.serve.workers`),
queues it for the next batch (:mod:`ember.serve.batching`) and answers with its own rows as JSON.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
# (``request: Request``), and Request is imported inside the functions that define the endpoints
# so that fastapi stays optional.
import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from ember.serve.batching import DynamicBatcher, QueueFull, ShuttingDown
from ember.serve.metrics import ServerMetrics
from ember.serve.openapi import predict_docs
from ember.serve.spec import TensorSpec
from ember.serve.validation import InvalidInput, check_content_type, read_body
from ember.serve.workers import JsonWorkers, WorkerFailed

log = logging.getLogger("ember.serve")

#: Every path the app answers; the metrics count any other path as ``other``.
ROUTES = ("/predict", "/health", "/metadata", "/metrics", "/docs", "/redoc", "/openapi.json")


class PredictOptions:
    """What ``/predict`` checks a request against and how it answers (the ``create_app`` options)."""

    def __init__(
        self, spec: TensorSpec | None, task: str | None, max_body_bytes: int, max_samples: int, allow_nan: bool
    ) -> None:
        self.spec = spec
        self.task = task
        self.max_body_bytes = max_body_bytes
        self.max_samples = max_samples
        self.allow_nan = allow_nan


def add_predict_route(app: Any, batcher: DynamicBatcher, json_workers: JsonWorkers, options: PredictOptions) -> None:
    """``POST /predict``: one sample or a batch in, the model's outputs (and, for a task, its answers) out."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response

    def error(status: int, detail: str) -> Response:
        return JSONResponse({"detail": detail}, status_code=status)

    docs = predict_docs(options.spec, options.task, options.max_samples, options.max_body_bytes)

    @app.post("/predict", openapi_extra=docs, response_model=None)
    async def predict(request: Request) -> Response:
        """Run the model on one sample or a batch: ``{"inputs": [...]}`` -> ``{"outputs": ...}``."""
        try:
            future, single = await _submit(request, batcher, json_workers, options)
        except InvalidInput as err:
            return error(err.status_code, err.detail)
        except (QueueFull, ShuttingDown) as err:
            return error(503, f"the server cannot take this request now: {err}")
        except WorkerFailed as err:
            return error(500, str(err))
        try:
            result = await asyncio.wrap_future(future)
        except Exception as err:
            return error(*_inference_failure(err, options.spec))
        try:
            answer = await json_workers.encode(result, single, options.task)
        except (ValueError, WorkerFailed) as err:
            log.error("could not write the model's output as JSON: %s", err)
            return error(500, str(err))
        return Response(answer, media_type="application/json")


def add_status_routes(app: Any, batcher: DynamicBatcher, metrics: ServerMetrics, metadata: dict[str, Any]) -> None:
    """``GET /health``, ``GET /metadata`` and ``GET /metrics``."""
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    @app.get("/health", responses={503: {"description": "The server is shutting down."}})
    async def health() -> Response:
        """200 while the server takes requests; 503 once it is shutting down."""
        if batcher.accepting:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """Model name, version, format, input and output shapes and dtypes (``null`` = any size)."""
        return metadata

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus metrics: requests by status, latency, batch sizes, inference time."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _submit(
    request: Any, batcher: DynamicBatcher, json_workers: JsonWorkers, options: PredictOptions
) -> tuple[Future, bool]:
    """Read and check the request, then queue its batch: the future of its rows, and whether it is one sample."""
    check_content_type(request.headers.get("content-type"))
    with batcher.arriving():
        body = await read_body(request, options.max_body_bytes)
        batch, single = await json_workers.decode(body, options.spec, options.allow_nan, options.max_samples)
        return batcher.submit(batch), single


def _inference_failure(err: Exception, spec: TensorSpec | None) -> tuple[int, str]:
    """The status and detail for a request the model failed on (called while ``err`` is handled)."""
    if spec is None or not spec.complete:
        # The input matched everything known about the model, yet the model refused it.
        return 422, f"the model could not process this input: {err}"
    log.exception("inference failed on a valid input")
    return 500, f"inference failed: {type(err).__name__}"
