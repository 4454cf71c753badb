"""TorchScript export (``torch.jit.script`` / ``torch.jit.trace``).

TorchScript is deprecated upstream (torch warns on every script/trace); it stays for deployments that
need it. New code should prefer :func:`ember.export.to_exported_program` (``.pt2``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from ember.export.samples import (
    METADATA_FILE,
    describe_inputs,
    eval_mode,
    resolve_input_sample,
    split_args,
    to_module_device,
)
from ember.export.targets import ExportTarget, check_target, write_export

METHODS = ("script", "trace")


def to_torchscript(
    module: nn.Module,
    file_path: ExportTarget | None = None,
    method: Literal["script", "trace"] = "script",
    example_inputs: Any = None,
    **kwargs: Any,
) -> torch.jit.ScriptModule:
    """Compile ``module`` with TorchScript and return it; also save it when ``file_path`` is given.

    Args:
        module: the model; compiled in eval mode (each submodule's mode is restored afterwards).
        file_path: where to save (``str``/``os.PathLike``, replaced atomically, or a writable binary
            file object); ``None`` only returns the compiled module.
        method: ``"script"`` compiles the Python code; ``"trace"`` records the operations run on
            ``example_inputs``.
        example_inputs: the tracing input (a tensor or a tuple of arguments); defaults to
            ``module.example_input_array``. Unused by ``"script"`` except to record the input shape.
        **kwargs: passed to ``torch.jit.script`` or ``torch.jit.trace``.

    The archive carries an ``ember.json`` entry (model name and input shape) that ``ember serve``
    uses to validate requests.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {', '.join(repr(m) for m in METHODS)}")
    if file_path is not None:
        check_target(file_path)
    with eval_mode(module), _jit_compatible(module):
        if method == "script":
            compiled = torch.jit.script(module, **kwargs)
            sample = example_inputs if example_inputs is not None else getattr(module, "example_input_array", None)
        else:
            sample = to_module_device(module, resolve_input_sample(module, example_inputs, "example_inputs"))
            if isinstance(sample, dict):
                compiled = torch.jit.trace(module, example_kwarg_inputs=sample, **kwargs)
            else:
                compiled = torch.jit.trace(module, sample if isinstance(sample, tuple) else (sample,), **kwargs)
    if file_path is not None:
        inputs = describe_inputs(*split_args(sample), dynamic_batch=True) if sample is not None else None
        metadata = json.dumps({"name": type(module).__name__, "format": "torchscript", "input": inputs})
        write_export(
            file_path, "model.pt", lambda path: torch.jit.save(compiled, path, _extra_files={METADATA_FILE: metadata})
        )
    return compiled


@contextlib.contextmanager
def _jit_compatible(module: nn.Module) -> Iterator[None]:
    """Let TorchScript see ``ember.Module`` instances without the training-only parts.

    ``ember.Module`` has properties that raise outside a Trainer (``trainer``) and attributes typed
    ``Any`` (``example_input_array``), which ``torch.jit`` tries to compile or probes with
    ``hasattr``. For the duration of the export each instance gets a same-named subclass that marks
    them as unused/ignored (TorchScript's documented ``__jit_unused_properties__`` /
    ``__jit_ignored_attributes__``); the original classes are restored afterwards.
    """
    from ember.module import Module

    swapped = [(m, type(m)) for m in module.modules() if isinstance(m, Module)]
    try:
        for instance, cls in swapped:
            instance.__class__ = _jit_view(cls)
        yield
    finally:
        for instance, cls in swapped:
            instance.__class__ = cls


_JIT_VIEWS: dict[type, type] = {}


def _jit_view(cls: type) -> type:
    view = _JIT_VIEWS.get(cls)
    if view is None:
        from ember.module import Module

        base_properties = [name for name, value in vars(Module).items() if isinstance(value, property)]
        ignored = [*Module.__annotations__, "_hparams", "_log_hyperparams"]
        view = type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__jit_unused_properties__": [*getattr(cls, "__jit_unused_properties__", []), *base_properties],
                "__jit_ignored_attributes__": [*getattr(cls, "__jit_ignored_attributes__", []), *ignored],
                "trainer": property(lambda self: self._trainer),
            },
        )
        _JIT_VIEWS[cls] = view
    return view
