"""``ember export CKPT --format onnx|torchscript|pt2 --output PATH --model pkg.Class``.

The checkpoint is rebuilt by the class named on the command line (``--model``), never by a class
path stored inside the file.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Literal

DESCRIPTION = "Export a checkpoint to ONNX, TorchScript or torch.export (.pt2)."
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}


def add_arguments(parser: Any) -> None:
    """The ``ember export`` options, on a jsonargparse parser."""
    parser.add_argument("checkpoint", type=str, help="The checkpoint file to export.")
    parser.add_argument(
        "--model",
        type=str,
        required=True,
        help="Class path of the ember.Module that rebuilds the checkpoint, e.g. mypkg.models.MyModel.",
    )
    parser.add_argument(
        "--format", type=Literal["onnx", "torchscript", "pt2"], required=True, help="The export format."
    )
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="Where to write; default: the checkpoint path with the format's suffix.",
    )
    parser.add_argument(
        "--method", type=Literal["script", "trace"], default="script", help="TorchScript only: script or trace."
    )
    parser.add_argument(
        "--dynamic-batch", type=bool, default=True, help="ONNX and pt2: make dimension 0 a dynamic batch axis."
    )


def run(config: Any) -> str:
    """Load the checkpoint with ``--model`` and export it; returns the output path."""
    model_class = import_class(config.model, "--model")
    checkpoint = Path(config.checkpoint)
    if not checkpoint.is_file():
        raise ValueError(f"checkpoint {str(checkpoint)!r}: no such file")
    output = config.output or str(checkpoint.with_suffix(SUFFIXES[config.format]))
    module = model_class.load_from_checkpoint(str(checkpoint), map_location="cpu")
    if config.format == "onnx":
        module.to_onnx(output, dynamic_batch=config.dynamic_batch)
    elif config.format == "pt2":
        module.to_exported_program(output, dynamic_batch=config.dynamic_batch)
    else:
        _to_torchscript(module, output, config.method)
    print(f"ember export: wrote {output} ({config.format})")
    return output


def _to_torchscript(module: Any, output: str, method: str) -> None:
    """``module.to_torchscript``; a model that ``torch.jit.script`` cannot compile is a ``ValueError`` that
    says what TorchScript refused (its first line) and suggests ``--method trace``."""
    if method != "script":
        module.to_torchscript(output, method=method)
        return
    try:
        module.to_torchscript(output, method="script")
    except Exception as err:  # TorchScript's frontend and compiler raise several types
        first_line = next((line.strip(" :") for line in str(err).splitlines() if line.strip(" :")), type(err).__name__)
        raise ValueError(
            f"--format torchscript: torch.jit.script cannot compile {type(module).__name__} ({first_line}); "
            "try --method trace, which records the operations run on the model's example_input_array, "
            "or --format pt2 / onnx"
        ) from err


def import_class(path: str, argument: str) -> type:
    """Import ``pkg.module.Class`` named by the user (the current directory is importable)."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{argument}={path!r}: expected a class path like mypkg.models.MyModel")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{argument}={path!r}: cannot import {module_name!r} ({err})") from err
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{argument}={path!r}: {module_name!r} has no class {class_name!r}")
    if not callable(getattr(cls, "load_from_checkpoint", None)):
        raise ValueError(f"{argument}={path!r} has no load_from_checkpoint; pass an ember.Module subclass")
    return cls
