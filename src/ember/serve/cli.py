"""``ember serve PATH [--model pkg.Class] --host --port --task --max-batch-size --max-wait-ms``."""

from __future__ import annotations

from typing import Any, Literal

DESCRIPTION = "Serve a model over HTTP: an exported .onnx/.pt2/TorchScript file, or a checkpoint with --model."


def add_arguments(parser: Any) -> None:
    """The ``ember serve`` options, on a jsonargparse parser."""
    parser.add_argument(
        "path", type=str, help="A .onnx, .pt2 or TorchScript (.pt/.ts) file, or a checkpoint (with --model)."
    )
    parser.add_argument(
        "--model",
        type=str | None,
        default=None,
        help="For a checkpoint: class path of its ember.Module, e.g. mypkg.MyModel.",
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="Interface to bind (0.0.0.0 for all).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on.")
    parser.add_argument(
        "--task",
        type=Literal["classification"] | None,
        default=None,
        help="classification: add predictions and probabilities.",
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="Most samples in one forward pass.")
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="How long a request may wait for others to batch with."
    )
    parser.add_argument("--max-queue-size", type=int, default=1024, help="Most requests waiting; beyond it 503.")
    parser.add_argument(
        "--max-body-bytes", type=int, default=8 * 1024 * 1024, help="Largest request body accepted (413 beyond)."
    )
    parser.add_argument("--allow-nan", type=bool, default=False, help="Accept NaN/infinity in inputs.")
    parser.add_argument(
        "--name", type=str | None, default=None, help="Model name for /metadata (default: class name or file stem)."
    )
    parser.add_argument("--model-version", type=str, default="1", help="Model version for /metadata.")
    parser.add_argument("--device", type=str, default="cpu", help="Device for torch models (cpu, cuda, ...).")
    parser.add_argument(
        "--num-threads",
        type=int | None,
        default=None,
        help="CPU threads per forward pass (default: one fewer than the CPUs).",
    )
    parser.add_argument(
        "--log-level",
        type=Literal["critical", "error", "warning", "info", "debug"],
        default="info",
        help="uvicorn log level.",
    )
    parser.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="Seconds in-flight requests get to finish on shutdown."
    )


def run(config: Any) -> None:
    """Build the app and serve it until SIGINT/SIGTERM."""
    from ember.export.cli import import_class
    from ember.serve.app import serve

    model_class = import_class(config.model, "--model") if config.model else None
    threads = {"num_threads": config.num_threads} if config.num_threads is not None else {}
    serve(
        config.path,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        timeout_graceful_shutdown=config.graceful_timeout,
        task=config.task,
        model_class=model_class,
        name=config.name,
        version=config.model_version,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        max_queue_size=config.max_queue_size,
        max_body_bytes=config.max_body_bytes,
        allow_nan=config.allow_nan,
        device=config.device,
        **threads,
    )
