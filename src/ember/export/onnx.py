"""ONNX export with the dynamo exporter: one self-contained file, a dynamic batch axis, quiet by default."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ember.export.exported_program import explain_batch_failure
from ember.export.samples import (
    batch_dynamic_shapes,
    eval_mode,
    expand_batch,
    resolve_input_sample,
    split_args,
    to_module_device,
)
from ember.export.targets import ExportTarget, check_target, write_export
from ember.optional import require

_USER_DYNAMIC = ("dynamic_shapes", "dynamic_axes")


def to_onnx(
    module: nn.Module,
    file_path: ExportTarget,
    input_sample: Any = None,
    *,
    dynamic_batch: bool = True,
    **kwargs: Any,
) -> Any:
    """Export ``module`` to ONNX at ``file_path`` and return torch's ``ONNXProgram``.

    Args:
        module: the model; exported in eval mode (each submodule's mode is restored afterwards).
        file_path: a ``str``/``os.PathLike`` (replaced atomically) or a writable binary file object
            (``io.BytesIO``, ``open(path, "wb")``), which receives the bytes of the model.
        input_sample: a tensor, a tuple of positional arguments or a dict of keyword arguments;
            defaults to ``module.example_input_array``.
        dynamic_batch: make dimension 0 of every input tensor a dynamic ``batch`` axis (a batch-1
            sample is repeated to 2 rows first, since torch specialises size-1 dimensions). Ignored
            when ``dynamic_shapes`` or ``dynamic_axes`` is given, and by the legacy ``dynamo=False``
            exporter (which warns it will be removed; give it ``dynamic_axes`` yourself).
        **kwargs: passed to ``torch.onnx.export`` (``opset_version``, ``input_names``, ``dynamo``, ...).
            Ember's defaults are ``dynamo=True``, ``external_data=False`` (one file) and ``verbose=False``.

    Example::

        model.to_onnx("model.onnx")                    # uses model.example_input_array
        buffer = io.BytesIO(); model.to_onnx(buffer, torch.zeros(1, 1, 8, 8))
    """
    check_target(file_path)
    require("onnxscript", "onnx")
    require("onnx", "onnx")
    sample = to_module_device(module, resolve_input_sample(module, input_sample))
    args, sample_kwargs = split_args(sample)
    options: dict[str, Any] = {"dynamo": True, "external_data": False, "verbose": False, **kwargs}
    if options["external_data"] and not isinstance(file_path, (str, os.PathLike)):
        raise ValueError("external_data=True writes a second file next to the model: give file_path as a path")
    for reserved in ("model", "args", "f", "kwargs"):
        if reserved in options:
            raise TypeError(f"to_onnx() got {reserved!r} in **kwargs; pass the model and input_sample as arguments")
    dynamic = dynamic_batch and options["dynamo"] and not any(k in options for k in _USER_DYNAMIC)
    if dynamic:
        args, sample_kwargs = expand_batch(args), expand_batch(sample_kwargs)
        options["dynamic_shapes"] = batch_dynamic_shapes(module, args, sample_kwargs)

    program = None

    def write(path: str) -> None:
        nonlocal program
        with eval_mode(module), explain_batch_failure(dynamic, f"{type(module).__name__} to ONNX", "The exporter"):
            program = torch.onnx.export(module, args, path, kwargs=sample_kwargs or None, **options)

    write_export(file_path, "model.onnx", write)
    return program
