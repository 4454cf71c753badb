"""TorchScript export (``torch.jit.script`` / ``torch.jit.trace``).

TorchScript is deprecated upstream (torch warns on every script/trace); it stays for deployments that
need it. New code should prefer :func:`ember.export.to_exported_program` (``.pt2``).
"""

from __future__ import annotations

import contextlib
import inspect
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


#: TorchScript's documented class attributes: properties it must not compile, attributes it must not type
_JIT_LISTS = ("__jit_unused_properties__", "__jit_ignored_attributes__")


@contextlib.contextmanager
def _jit_compatible(module: nn.Module) -> Iterator[None]:
    """Let TorchScript honour every ``__jit_unused_properties__`` / ``__jit_ignored_attributes__``
    that a submodule's classes declare.

    TorchScript reads each list from the module's class only (a subclass's own list hides its bases'),
    skips an ignored property only when that class itself defines it, and probes every attribute with
    ``hasattr`` when tracing (``ember.Module.trainer`` raises outside a Trainer). For the duration of the
    export each such instance gets a same-named subclass carrying the lists merged along its bases and
    its ignored properties, each reading as absent (``AttributeError``) when it cannot be read; the
    original classes are restored afterwards.
    """
    swapped = [(m, type(m)) for m in module.modules() if _jit_view(type(m)) is not type(m)]
    try:
        for instance, cls in swapped:
            instance.__class__ = _jit_view(cls)
        yield
    finally:
        for instance, cls in swapped:
            instance.__class__ = cls


_JIT_VIEWS: dict[type, type] = {}


def _jit_view(cls: type) -> type:
    """``cls`` as TorchScript should see it: ``cls`` itself when it already declares everything."""
    view = _JIT_VIEWS.get(cls)
    if view is None:
        view = _JIT_VIEWS[cls] = _make_jit_view(cls)
    return view


def _make_jit_view(cls: type) -> type:
    lists = {attribute: _merged_along_bases(cls, attribute) for attribute in _JIT_LISTS}
    ignored_properties = {
        name: _absent_when_unreadable(name, value)
        for name in lists["__jit_ignored_attributes__"]
        if isinstance(value := inspect.getattr_static(cls, name, None), property)
    }
    if not ignored_properties and all(list(getattr(cls, key, [])) == names for key, names in lists.items()):
        return cls  # TorchScript sees everything as declared already
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **lists, **ignored_properties}
    return type(cls.__name__, (cls,), namespace)


def _absent_when_unreadable(name: str, prop: property) -> property:
    """``prop``, raising ``AttributeError`` where it raises anything else (what ``hasattr`` expects)."""
    getter = prop.fget

    def get(self: Any) -> Any:
        try:
            return getter(self)
        except Exception as err:
            raise AttributeError(f"{type(self).__name__}.{name} cannot be read while exporting: {err}") from err

    return property(get, prop.fset, prop.fdel, prop.__doc__)


def _merged_along_bases(cls: type, attribute: str) -> list[str]:
    """The names that ``cls`` and its bases list in ``attribute``, each once, the class's own first."""
    names: dict[str, None] = {}
    for base in cls.__mro__:
        names.update(dict.fromkeys(vars(base).get(attribute, ())))
    return list(names)
