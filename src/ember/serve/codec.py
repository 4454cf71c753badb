"""JSON in and out of the model server: a request body to a model-ready batch, outputs to a JSON answer.

:func:`decode_request` and :func:`encode_answer` are plain functions of bytes and numpy arrays. On a large
body they hold the GIL for a long time (orjson parses and writes in one C call: about 0.2-0.8 s for 8 MiB
of numbers), so :mod:`ember.serve.workers` runs them in separate processes, each executing
:func:`serve_jobs`. The frames between the server and a worker are length-prefixed; what a worker sends
back is raw bytes, a numpy array (dtype, shape, buffer) or an error (status, detail): the server never
unpickles anything a worker produced from client input.
"""

from __future__ import annotations

import json
import pickle
import struct
from typing import Any, BinaryIO

import numpy as np

from ember.serve.spec import TensorSpec
from ember.serve.validation import InvalidInput, check_samples, parse_inputs, to_batch
from ember.tree import tree_map

try:  # part of the "serve" extra; several times faster than json, and it writes numpy arrays directly
    import orjson
except ImportError:  # pragma: no cover - the stdlib writer gives the same JSON
    orjson = None

_HEADER = struct.Struct("<cQ")  # a kind byte and the payload length


def decode_request(body: bytes, spec: TensorSpec | None, allow_nan: bool, max_samples: int) -> tuple[np.ndarray, bool]:
    """The model-ready batch of a ``{"inputs": ...}`` body and whether it held one sample; raises ``InvalidInput``."""
    inputs = parse_inputs(body)
    check_samples(inputs, spec, max_samples)
    return to_batch(inputs, spec, allow_nan, check_bools=b"true" in body or b"false" in body)


def encode_answer(result: Any, single: bool, task: str | None) -> bytes:
    """The JSON answer to a request: its outputs, plus predictions and probabilities for classification.

    Non-finite outputs are written as ``null`` (JSON has no NaN); raises ``ValueError`` for a
    classification model that does not return one tensor.
    """
    answer: dict[str, Any] = {"outputs": _rows(result, single)}
    if task == "classification":
        if not isinstance(result, np.ndarray):
            raise ValueError("task='classification' needs a model with one output tensor (the logits)")
        logits = result.astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        answer["predictions"] = _rows(probabilities.argmax(axis=-1), single)
        answer["probabilities"] = _rows(probabilities, single)
    if orjson is not None:
        try:
            return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # a dtype orjson does not write (complex, ...): the general path below
            pass
    return json.dumps(tree_map(_plain, answer)).encode()


def _rows(tree: Any, single: bool) -> Any:
    """The output tree, C-contiguous (what orjson writes); for a single sample, its one row."""
    return tree_map(lambda array: _contiguous(array[0] if single else array), tree)


def _contiguous(value: Any) -> Any:
    """``value`` (an array, or a numpy scalar: the row of a 1-d output) as orjson can write it."""
    if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
        return np.ascontiguousarray(value)
    return value


def _plain(array: np.ndarray) -> Any:
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        array = np.where(np.isfinite(array), array, None)
    return array.tolist()


# ---------------------------------------------------------------- the worker side

JOBS = {"decode": decode_request, "encode": encode_answer}


def serve_jobs(jobs: BinaryIO, answers: BinaryIO) -> None:
    """Run jobs until ``jobs`` closes: each a pickled ``(name, args)`` from the server (trusted), each
    answered with one frame (see :func:`read_answer`)."""
    while True:
        frame = _read_frame(jobs)
        if frame is None:
            return
        name, args = pickle.loads(frame[1])
        try:
            _write_result(answers, JOBS[name](*args))
        except InvalidInput as err:
            _write(answers, b"E", json.dumps([err.status_code, err.detail]).encode())
        except Exception as err:  # the server reports it; the worker lives on
            _write(answers, b"X", json.dumps([type(err).__name__, str(err)]).encode())
        answers.flush()


def write_job(stream: BinaryIO, name: str, args: tuple[Any, ...]) -> None:
    """Send one job to a worker."""
    _write(stream, b"J", pickle.dumps((name, args), protocol=pickle.HIGHEST_PROTOCOL))
    stream.flush()


def read_answer(stream: BinaryIO) -> Any:
    """A worker's answer: bytes, ``(array, single)``; raises ``InvalidInput``, ``ValueError`` for a failure,
    ``EOFError`` when the worker is gone."""
    frame = _read_frame(stream)
    if frame is None:
        raise EOFError("the JSON worker exited")
    kind, payload = frame
    if kind == b"B":
        return bytes(payload)
    if kind == b"A":
        meta_size = int.from_bytes(payload[:4], "little")
        meta = json.loads(payload[4 : 4 + meta_size])
        # A writable buffer (a bytearray): torch.from_numpy warns about read-only arrays.
        array = np.frombuffer(payload, dtype=np.dtype(meta["dtype"]), offset=4 + meta_size)
        return array.reshape(meta["shape"]), bool(meta["single"])
    if kind == b"E":
        status, detail = json.loads(payload)
        raise InvalidInput(int(status), str(detail))
    name, message = json.loads(payload)
    raise ValueError(f"{name}: {message}")


def _write_result(stream: BinaryIO, result: Any) -> None:
    if isinstance(result, bytes):
        _write(stream, b"B", result)
        return
    array, single = result
    meta = json.dumps({"dtype": array.dtype.str, "shape": list(array.shape), "single": single}).encode()
    _write(stream, b"A", len(meta).to_bytes(4, "little") + meta + np.ascontiguousarray(array).tobytes())


def _write(stream: BinaryIO, kind: bytes, payload: bytes) -> None:
    stream.write(_HEADER.pack(kind, len(payload)))
    stream.write(payload)


def _read_frame(stream: BinaryIO) -> tuple[bytes, bytearray] | None:
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    kind, size = _HEADER.unpack(bytes(header))
    payload = _read_exactly(stream, size)
    if payload is None:
        return None
    return kind, payload


def _read_exactly(stream: BinaryIO, size: int) -> bytearray | None:
    data = bytearray(size)
    view, filled = memoryview(data), 0
    while filled < size:
        count = stream.readinto(view[filled:])
        if not count:
            return None
        filled += count
    return data
