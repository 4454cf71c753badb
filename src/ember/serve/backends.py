"""Loading what ``ember serve`` runs: a module, a checkpoint with its class, or an exported artifact.

A backend turns a numpy batch into a tree of numpy outputs and knows, where it can, the expected
input (``TensorSpec``): from ``example_input_array``, the ``.pt2`` graph, the ONNX signature, or the
``ember.json`` entry Ember writes into TorchScript archives. Nothing named inside a file is imported:
a checkpoint is rebuilt only by the class the caller passes.

What is safe to load from others: ONNX files and Ember checkpoints (with ``model_class``) load as data.
A ``.pt2`` archive is not: ``torch.export.load`` unpickles parts of it with ``weights_only=False``, so
it runs whatever code the file holds; it is loaded only with ``trusted=True`` (``ember serve --trust-pt2``).
TorchScript files are programs too: serve only ones you trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.export.samples import METADATA_FILE
from ember.optional import require
from ember.serve.spec import Outputs, TensorSpec, numpy_dtype, spec_of
from ember.tree import tree_map

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit", ".torchscript")
ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class Backend:
    """A loaded model: ``predict(batch) -> outputs`` plus what is known about it."""

    def __init__(self, predict: Callable[[np.ndarray], Outputs], name: str, format: str, input: TensorSpec | None):
        self.predict = predict
        self.name = name
        self.format = format
        self.input = input


def load_backend(
    model_or_path: Any,
    *,
    model_class: type | None = None,
    input_sample: Any = None,
    device: str = "cpu",
    num_threads: int | None = None,
    trusted: bool = False,
) -> Backend:
    """Build the backend for ``model_or_path`` (see :func:`ember.serve.create_app` for what it accepts).

    ``trusted=True`` allows loading a ``.pt2`` archive, which can run code (see the module docstring).
    """
    if isinstance(model_or_path, torch.export.ExportedProgram):
        backend = _from_program(model_or_path, "exported_program", device)
    elif isinstance(model_or_path, nn.Module):
        if model_class is not None:
            raise ValueError("model_class is for loading a checkpoint path; model_or_path is already a module")
        backend = _from_module(model_or_path, "module", device)
    elif isinstance(model_or_path, (str, os.PathLike)):
        backend = _from_path(Path(model_or_path), model_class, device, num_threads, trusted)
    else:
        raise TypeError(
            "model_or_path must be an nn.Module, a torch.export.ExportedProgram, or the path of a .onnx, .pt2, "
            f"TorchScript ({', '.join(TORCHSCRIPT_SUFFIXES)}) file or a checkpoint; got {type(model_or_path).__name__}"
        )
    if input_sample is not None:
        if not hasattr(input_sample, "shape") or len(input_sample.shape) == 0:
            raise TypeError("input_sample must be a batched tensor or numpy array, e.g. torch.zeros(1, 3, 32, 32)")
        backend.input = spec_of(input_sample, backend.input.batch if backend.input else None)
    return backend


def untrusted_pt2_error(path: Path | str, how_to_trust: str) -> ValueError:
    """The error for a ``.pt2`` file loaded without trust; ``how_to_trust`` names the flag or argument."""
    return ValueError(
        f"{path} is a torch.export (.pt2) archive: torch.export.load unpickles parts of it with "
        "weights_only=False, which runs any code the file contains. Load it only if you trust whoever made it "
        f"({how_to_trust}); for models from others serve an ONNX file or an Ember checkpoint with its class, "
        "which load as data"
    )


def _from_path(path: Path, model_class: type | None, device: str, num_threads: int | None, trusted: bool) -> Backend:
    if not path.is_file():
        raise FileNotFoundError(f"model_or_path={str(path)!r}: no such file")
    suffix = path.suffix.lower()
    if model_class is not None:
        loader = getattr(model_class, "load_from_checkpoint", None)
        if not isinstance(model_class, type) or not callable(loader):
            raise TypeError(
                f"model_class={model_class!r} cannot load a checkpoint: pass an ember.Module subclass "
                "(a class with load_from_checkpoint)"
            )
        module = loader(str(path), map_location=device)
        return _from_module(module, "checkpoint", device)
    if suffix == ".onnx":
        return _from_onnx(path, device, num_threads)
    if suffix == ".pt2":
        if not trusted:
            raise untrusted_pt2_error(path, "create_app(path, trusted=True) / ember serve PATH --trust-pt2")
        extra = {METADATA_FILE: ""}
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as err:  # torch raises several types for a damaged or foreign archive
            raise ValueError(f"{path} is not a torch.export (.pt2) archive: {err}") from err
        backend = _from_program(program, path.stem, device)
        backend.name = _metadata(extra).get("name") or backend.name
        return backend
    if suffix in TORCHSCRIPT_SUFFIXES:
        extra = {METADATA_FILE: ""}
        try:
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except RuntimeError as err:
            raise ValueError(
                f"{path} is not a TorchScript archive ({err}); a checkpoint needs its class: "
                "create_app(path, model_class=MyModule) / ember serve PATH --model pkg.MyModule"
            ) from err
        metadata = _metadata(extra)
        backend = _from_module(module, "torchscript", device)
        backend.name = metadata.get("name") or backend.name
        backend.input = _spec_from_metadata(metadata.get("input")) or backend.input
        return backend
    if suffix == ".ckpt":
        raise ValueError(
            f"{path} is a checkpoint: name its class, create_app(path, model_class=MyModule) or "
            "ember serve PATH --model pkg.MyModule (a class stored in a file is never imported)"
        )
    raise ValueError(
        f"cannot serve {path.name!r}: expected a .onnx, .pt2, TorchScript ({', '.join(TORCHSCRIPT_SUFFIXES)}) file, "
        "or a checkpoint together with model_class"
    )


def _spec_from_metadata(info: Any) -> TensorSpec | None:
    try:
        shape = tuple(None if d is None else int(d) for d in info["shape"])
        batch = info.get("batch")
        return TensorSpec(shape, np.dtype(info["dtype"]), None if batch is None else int(batch))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None  # absent or not ours: the server then checks only what it can


def _metadata(extra: dict[str, Any]) -> dict[str, Any]:
    raw = extra.get(METADATA_FILE) or ""
    try:
        value = json.loads(raw) if raw else {}
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _from_module(module: nn.Module, format: str, device: str) -> Backend:
    module = module.to(device).eval()
    target = torch.device(device)
    name = getattr(module, "original_name", None) or type(module).__name__

    def predict(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            out = module(torch.from_numpy(batch).to(target))
        return tree_map(_to_numpy, out)

    example = getattr(module, "example_input_array", None)
    if isinstance(example, (tuple, list, dict)) and len(example) != 1:
        raise ValueError(
            f"{name}.example_input_array holds {len(example)} inputs; ember serve feeds models with one input tensor"
        )
    if isinstance(example, (tuple, list)):
        example = example[0]
    spec = spec_of(example) if isinstance(example, torch.Tensor) and example.dim() > 0 else None
    return Backend(predict, name, format, spec)


def _from_program(program: torch.export.ExportedProgram, name: str, device: str) -> Backend:
    module = program.module().to(device)
    target = torch.device(device)

    def predict(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            out = module(torch.from_numpy(batch).to(target))
        return tree_map(_to_numpy, out)

    return Backend(predict, name, "pt2", _program_input(program))


def _program_input(program: torch.export.ExportedProgram) -> TensorSpec | None:
    names = program.graph_signature.user_inputs
    if len(names) != 1:
        raise ValueError(
            f"the exported program takes {len(names)} inputs {list(names)}; ember serve feeds models with one"
        )
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0]), None)
    value = node.meta.get("val") if node is not None else None
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return None
    dims = [d if isinstance(d, int) else None for d in value.shape]
    return TensorSpec(tuple(dims[1:]), numpy_dtype(value.dtype), dims[0])


def _from_onnx(path: Path, device: str, num_threads: int | None) -> Backend:
    ort = require("onnxruntime", "onnx")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(path), options, providers=providers)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ValueError(f"{path.name} takes {len(inputs)} inputs {names}; ember serve feeds models with one input")
    info = inputs[0]
    if info.type not in ONNX_TYPES:
        raise ValueError(f"{path.name}: input type {info.type} is not supported; supported: {sorted(ONNX_TYPES)}")
    dims = [d if isinstance(d, int) else None for d in info.shape]
    spec = TensorSpec(tuple(dims[1:]), np.dtype(ONNX_TYPES[info.type]), dims[0]) if dims else None
    input_name = info.name

    def predict(batch: np.ndarray) -> Outputs:
        out = session.run(None, {input_name: batch})
        return out[0] if len(out) == 1 else tuple(out)

    return Backend(predict, path.stem, "onnx", spec)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16
            value = value.float()
        return value.detach().cpu().numpy()
    raise TypeError(
        f"the model returned a {type(value).__name__}; ember serve returns tensors (or tuples/dicts of them)"
    )
