"""``ember serve PATH [--model pkg.Class] --host --port --task --max-batch-size ... --trust-pt2``."""

from __future__ import annotations

from typing import Any, Literal

DESCRIPTION = (
    "Serve a model over HTTP: an exported .onnx/.pt2/TorchScript file, or a checkpoint with --model. "
    "Safe for files from others: ONNX (.onnx) and Ember checkpoints (with --model), which load as data. "
    "A .pt2 archive runs code when loaded (torch.export.load unpickles it): it needs --trust-pt2. "
    "TorchScript files are programs too: serve only ones you trust."
)


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
    parser.add_argument(
        "--trust-pt2",
        action="store_true",
        help="Load a .pt2 archive, which can run any code it contains: only for files you trust. "
        "For files from others use ONNX or an Ember checkpoint.",
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="Interface to bind (0.0.0.0 for all).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on (0-65535).")
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
    parser.add_argument("--max-samples", type=int, default=4096, help="Most samples in one request (413 beyond).")
    parser.add_argument("--allow-nan", type=bool, default=False, help="Accept NaN/infinity in inputs.")
    parser.add_argument(
        "--timeout-keep-alive", type=float, default=5.0, help="Seconds an idle connection stays open between requests."
    )
    parser.add_argument(
        "--timeout-headers",
        type=float,
        default=10.0,
        help="Seconds from a connection's opening (or a request's first byte) to its complete headers.",
    )
    parser.add_argument(
        "--timeout-body", type=float, default=60.0, help="Seconds from a request's headers to its complete body (408)."
    )
    parser.add_argument(
        "--max-connections", type=int, default=512, help="Most connections open at once; beyond it 503 and closed."
    )
    parser.add_argument(
        "--json-workers",
        type=int,
        default=1,
        help="Processes that parse large bodies and write large answers off the event loop (0: none).",
    )
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
    """Check the address and the file's trust, build the app and serve it until SIGINT/SIGTERM."""
    from pathlib import Path

    from ember.export.cli import import_class
    from ember.serve.app import check_address, serve
    from ember.serve.backends import untrusted_pt2_error

    check_address(config.host, config.port)  # before anything is loaded
    if Path(config.path).suffix.lower() == ".pt2" and not config.model and not config.trust_pt2:
        raise untrusted_pt2_error(config.path, "ember serve PATH --trust-pt2")
    model_class = import_class(config.model, "--model") if config.model else None
    threads = {"num_threads": config.num_threads} if config.num_threads is not None else {}
    serve(
        config.path,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        timeout_graceful_shutdown=config.graceful_timeout,
        timeout_keep_alive=config.timeout_keep_alive,
        timeout_headers=config.timeout_headers,
        timeout_body=config.timeout_body,
        max_connections=config.max_connections,
        task=config.task,
        model_class=model_class,
        name=config.name,
        version=config.model_version,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        max_queue_size=config.max_queue_size,
        max_body_bytes=config.max_body_bytes,
        max_samples=config.max_samples,
        allow_nan=config.allow_nan,
        device=config.device,
        json_workers=config.json_workers,
        trusted=config.trust_pt2,
        **threads,
    )
