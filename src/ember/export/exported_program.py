"""``torch.export``: an ``ExportedProgram``, saved as a ``.pt2`` archive — the recommended export format."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ember.export.samples import (
    METADATA_FILE,
    batch_dynamic_shapes,
    describe_inputs,
    eval_mode,
    expand_batch,
    resolve_input_sample,
    split_args,
    to_module_device,
)
from ember.export.targets import ExportTarget, check_target, write_export


def to_exported_program(
    module: nn.Module,
    file_path: ExportTarget | None = None,
    input_sample: Any = None,
    *,
    dynamic_batch: bool = True,
    strict: bool = False,
    **kwargs: Any,
) -> torch.export.ExportedProgram:
    """Export ``module`` with ``torch.export.export``; save it as ``.pt2`` when ``file_path`` is given.

    Args:
        module: the model; exported in eval mode (each submodule's mode is restored afterwards).
        file_path: where to save (``str``/``os.PathLike``, replaced atomically, or a writable binary
            file object); ``None`` only returns the program. Load it with ``torch.export.load``.
        input_sample: a tensor, a tuple of positional arguments or a dict of keyword arguments;
            defaults to ``module.example_input_array``.
        dynamic_batch: make dimension 0 of every input tensor a dynamic ``batch`` axis (a batch-1
            sample is repeated to 2 rows first). Ignored when ``dynamic_shapes`` is given.
        strict: ``torch.export.export``'s ``strict`` (False traces with Python semantics).
        **kwargs: passed to ``torch.export.export`` (``dynamic_shapes``, ``preserve_module_call_signature``).

    Example::

        program = model.to_exported_program("model.pt2")
        torch.export.load("model.pt2").module()(torch.zeros(4, 1, 8, 8))
    """
    if file_path is not None:
        check_target(file_path)
    sample = to_module_device(module, resolve_input_sample(module, input_sample))
    args, sample_kwargs = split_args(sample)
    user_shapes = "dynamic_shapes" in kwargs
    dynamic = dynamic_batch and not user_shapes
    if dynamic:
        args, sample_kwargs = expand_batch(args), expand_batch(sample_kwargs)
        kwargs["dynamic_shapes"] = batch_dynamic_shapes(module, args, sample_kwargs)
    with eval_mode(module), explain_batch_failure(dynamic, type(module).__name__, "torch.export"):
        program = torch.export.export(module, args, sample_kwargs or None, strict=strict, **kwargs)
    if file_path is not None:
        # With the caller's own dynamic_shapes Ember cannot tell which axes vary; a server reads the graph.
        inputs = None if user_shapes else describe_inputs(args, sample_kwargs, dynamic_batch=dynamic)
        metadata = json.dumps({"name": type(module).__name__, "format": "pt2", "input": inputs})
        write_export(
            file_path, "model.pt2", lambda path: torch.export.save(program, path, extra_files={METADATA_FILE: metadata})
        )
    return program


@contextlib.contextmanager
def explain_batch_failure(dynamic: bool, subject: str, exporter: str) -> Iterator[None]:
    """Re-raise an export error that mentions the batch axis with what to do about it.

    ``torch.export`` (also under the ONNX exporter) fails when a model works with one batch size only;
    with ``dynamic`` (a dynamic batch axis was asked for) such an error becomes a ``RuntimeError``
    naming ``subject`` (what was exported) and suggesting ``dynamic_batch=False``.
    """
    try:
        yield
    except Exception as err:
        if dynamic and "batch" in str(err):
            raise RuntimeError(
                f"exporting {subject} with a dynamic batch axis failed; if the model only works "
                f"with one batch size, pass dynamic_batch=False. {exporter} said: {err}"
            ) from err
        raise
