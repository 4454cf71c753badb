"""Turning a request body into a model-ready numpy batch, or a 4xx that says what was expected.

Everything a client can send is checked here, before it reaches the model: the media type, the body's
size, the JSON itself, the ``inputs`` field, the number of samples, non-numbers, ragged nesting, shape
and dtype against the model's ``TensorSpec``, NaN/infinity and values out of the dtype's range.
Nothing here imports torch, so the JSON worker processes (:mod:`ember.serve.workers`) stay light.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from ember.serve.spec import TensorSpec

try:  # several times faster on large arrays of numbers; part of the "serve" extra
    import orjson
except ImportError:  # pragma: no cover - the stdlib parser gives the same results
    orjson = None

#: The dtype of inputs for a model whose expected input is unknown.
DEFAULT_DTYPE = np.dtype(np.float32)


class InvalidInput(Exception):
    """A request the server refuses: ``status_code`` (4xx) and a ``detail`` for the client."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def check_content_type(value: str | None) -> None:
    """Refuse (415) a body that is not declared ``application/json`` (parameters such as charset allowed)."""
    media_type = (value or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        sent = f"Content-Type {value!r}" if value else "no Content-Type"
        raise InvalidInput(415, f'this server takes JSON only: send "Content-Type: application/json" (got {sent})')


def check_samples(inputs: Any, spec: TensorSpec | None, max_samples: int) -> None:
    """Refuse (413) ``inputs`` holding more than ``max_samples`` samples, before any array is built.

    A batch is a list one level deeper than a sample (the model's rank, when known); anything that is
    neither is left to :func:`to_batch`, which explains the shape it expected.
    """
    if not isinstance(inputs, list):
        return
    depth, item = 0, inputs
    while isinstance(item, list) and item:
        depth, item = depth + 1, item[0]
    if spec is not None and depth <= len(spec.shape):
        return  # one sample (or too shallow, which to_batch reports)
    if len(inputs) > max_samples:
        raise InvalidInput(
            413,
            f'"inputs" holds {len(inputs)} samples; this server accepts at most {max_samples} per request '
            "(max_samples): split them into several requests",
        )


def parse_inputs(body: bytes) -> Any:
    """The ``inputs`` value of a JSON body ``{"inputs": ...}`` (NaN and Infinity literals parse)."""
    if not body.strip():
        raise InvalidInput(400, 'the request body is empty; send JSON like {"inputs": [...]}')
    try:
        payload = orjson.loads(body) if orjson is not None else json.loads(body)
    except (ValueError, RecursionError):
        # orjson refuses what Python's parser accepts (NaN, Infinity, huge integers): those are
        # checked below with a precise message. Real syntax errors get the stdlib's description.
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InvalidInput(400, f'the request body is not valid JSON ({err}); send {{"inputs": [...]}}') from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InvalidInput(422, 'the body must be a JSON object with an "inputs" field: {"inputs": [...]}')
    return payload["inputs"]


async def read_body(request: Any, limit: int) -> bytes:
    """The body of an HTTP request (a Starlette ``Request``), refused with 413 when it exceeds ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInput(400, f"invalid Content-Length header {length!r}")
        if int(length) > limit:
            raise InvalidInput(413, f"the request body has {int(length)} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidInput(413, f"the request body exceeds {limit} bytes, the most this server accepts")
        chunks.append(chunk)
    return b"".join(chunks)


def to_batch(
    inputs: Any, spec: TensorSpec | None, allow_nan: bool = False, check_bools: bool = True
) -> tuple[np.ndarray, bool]:
    """A C-contiguous batch in the model's dtype, and whether the client sent one sample (not a batch).

    ``check_bools=False`` skips the search for ``true``/``false`` among numbers (which numpy would
    silently turn into 1/0): pass it when the raw body contains neither word.
    """
    expected = _describe(spec)
    if isinstance(inputs, (list, int, float)) and not isinstance(inputs, bool):
        array = _as_array(inputs, expected)
    else:
        raise InvalidInput(422, f'"inputs" must be numbers in nested lists: {expected}; got {_json_type(inputs)}')
    if array.size == 0:
        raise InvalidInput(422, f'"inputs" is empty; expected {expected}')
    if array.dtype == np.bool_ or (check_bools and array.dtype.kind in "fiu" and _contains_bool(inputs)):
        if spec is None or spec.dtype != np.bool_:
            raise InvalidInput(422, f'"inputs" contains true/false; expected numbers: {expected}')
    single, sent = False, list(array.shape)
    if spec is not None:
        rank = len(spec.shape)
        if array.ndim == rank:
            array, single = array[np.newaxis], True
        # Any number of samples: a model exported with a fixed batch gets padded chunks (see batching).
        wanted = (None, *spec.shape)
        if array.ndim != rank + 1 or any(w is not None and w != d for w, d in zip(wanted, array.shape)):
            raise InvalidInput(422, f'"inputs" has shape {sent}; expected {expected}')
    elif array.ndim == 0:
        raise InvalidInput(422, f'"inputs" is a single number; expected {expected}')
    dtype = spec.dtype if spec is not None else DEFAULT_DTYPE
    return np.ascontiguousarray(_cast(array, dtype, allow_nan, expected)), single


@functools.lru_cache(maxsize=64)
def _describe(spec: TensorSpec | None) -> str:
    return spec.describe() if spec is not None else "a batch (a list) of samples"


def _as_array(inputs: Any, expected: str) -> np.ndarray:
    try:
        array = np.asarray(inputs)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(
            422, f'"inputs" must be a rectangular nested list (every row the same length); expected {expected}'
        ) from None
    if array.dtype.kind in "fiub":
        return array
    if array.dtype.kind in "US":
        problem = "contains strings"
    elif _contains(inputs, lambda v: v is None):
        problem = "contains null"
    elif _contains(inputs, lambda v: not isinstance(v, (int, float))):
        problem = "contains values that are not numbers (objects or strings)"
    else:
        problem = "contains integers too large for any numeric type"
    raise InvalidInput(422, f'"inputs" {problem}; expected numbers: {expected}')


def _cast(array: np.ndarray, dtype: np.dtype, allow_nan: bool, expected: str) -> np.ndarray:
    if dtype == np.bool_:
        if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
            raise InvalidInput(422, f'"inputs" must be true/false or 0/1; expected {expected}')
        return array.astype(np.bool_)
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            if not np.isfinite(array).all() or not (array == np.round(array)).all():
                raise InvalidInput(422, f'"inputs" must be integers; expected {expected}')
        info = np.iinfo(dtype)
        # Floats compare against exact bounds: float(info.max) rounds up to 2**63 for int64 (exclusive).
        above = array.max() >= float(info.max) + 1 if array.dtype.kind == "f" else array.max() > info.max
        if array.min() < info.min or above:
            raise InvalidInput(422, f'"inputs" has values outside the {dtype.name} range [{info.min}, {info.max}]')
        return array.astype(dtype)
    finite_before = allow_nan or array.dtype.kind != "f" or bool(np.isfinite(array).all())
    if not finite_before:
        raise InvalidInput(
            422, f'"inputs" contains NaN or infinity, which this server does not accept; expected {expected}'
        )
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype)
    if not allow_nan and not np.isfinite(cast).all():
        info = np.finfo(dtype)
        raise InvalidInput(422, f'"inputs" has values outside the {dtype.name} range (about ±{float(info.max):.3g})')
    return cast


def _contains_bool(inputs: Any) -> bool:
    return _contains(inputs, lambda v: isinstance(v, bool))


def _contains(value: Any, predicate: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif predicate(item):
            return True
    return False


def _json_type(value: Any) -> str:
    names = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
