"""The OpenAPI description of ``POST /predict``: the input's shape and dtype as JSON Schema, a valid example.

The schema is exact where the model's input is known: nested arrays whose lengths are the sample's
dimensions, leaves of the dtype's JSON type and range, one sample or a batch of at most ``max_samples``.
A client (or a fuzzer) generating from it sends requests the server accepts; its example is one of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.serve.spec import TensorSpec

#: Sample sizes (numbers) up to which the docs carry a complete example request.
EXAMPLE_LIMIT = 65_536

ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["detail"],
            "properties": {"detail": {"type": "string", "description": "What was wrong and what is expected."}},
        }
    }
}


def predict_docs(spec: TensorSpec | None, task: str | None, max_samples: int, max_body_bytes: int) -> dict[str, Any]:
    """``openapi_extra`` for ``POST /predict``: the request body (schema, example) and every status it answers."""
    expected = spec.describe() if spec is not None else "a batch (a list) of samples; the model's input is unknown"
    inputs = {**inputs_schema(spec, max_samples), "description": f"{expected}; at most {max_samples} samples."}
    content: dict[str, Any] = {
        "schema": {"type": "object", "required": ["inputs"], "properties": {"inputs": inputs}},
    }
    example = example_inputs(spec)
    if example is not None:
        content["example"] = {"inputs": example}
    outputs_doc = "The model's outputs for the sample, or a list of them for a batch"
    answer: dict[str, Any] = {"outputs": {"description": "The model's outputs (null where not finite)."}}
    if task == "classification":
        outputs_doc += ", plus predictions (class indices) and probabilities (softmax)"
        answer["predictions"] = {"description": "The index of the largest output."}
        answer["probabilities"] = {"description": "The softmax of the outputs."}
    ok = {"application/json": {"schema": {"type": "object", "required": ["outputs"], "properties": answer}}}

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": ERROR_BODY}

    return {
        "requestBody": {"required": True, "content": {"application/json": content}},
        "responses": {
            "200": {"description": outputs_doc + ".", "content": ok},
            "400": error("The body is empty or not valid JSON, or its Content-Length header is invalid."),
            "408": error("The body did not arrive within the server's timeout_body (the connection is closed)."),
            "413": error(f"The body is larger than {max_body_bytes} bytes, or holds more than {max_samples} samples."),
            "415": error("The body is not declared as JSON: send Content-Type: application/json."),
            "422": error("The inputs do not match what the model expects; the detail says what was expected."),
            "500": error("The model failed on an input that matched everything known about it."),
            "503": error("The server is shutting down or its queue is full."),
        },
    }


def inputs_schema(spec: TensorSpec | None, max_samples: int) -> dict[str, Any]:
    """The JSON Schema of ``inputs``: one sample, or a list of 1 to ``max_samples`` samples."""
    if spec is None:
        return {"type": "array", "minItems": 1, "maxItems": max_samples}
    sample = number_schema(spec.dtype)
    for size in reversed(spec.shape):
        sample = {"type": "array", "items": sample, "minItems": size or 1, **({"maxItems": size} if size else {})}
    batch = {"type": "array", "items": sample, "minItems": 1, "maxItems": max_samples}
    return {"anyOf": [sample, batch]}


def number_schema(dtype: np.dtype) -> dict[str, Any]:
    """One number of ``dtype``: its JSON type and the range it can hold (format: the dtype's name)."""
    if dtype == np.bool_:
        return {"type": "boolean", "format": "bool"}
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return {
            "type": "integer",
            "format": dtype.name,
            "minimum": _float_exact(info.min),
            "maximum": _float_exact(info.max),
        }
    largest = float(np.finfo(dtype).max) if dtype.kind == "f" else math.inf
    bounds = {"minimum": -largest, "maximum": largest} if math.isfinite(largest) else {}
    return {"type": "number", "format": dtype.name, **bounds}


def _float_exact(bound: int) -> int:
    """``bound`` moved toward zero until a float64 holds it exactly: OpenAPI documents keep bounds as
    floats, and int64's largest value would otherwise read as 2**63, which is out of range."""
    value = float(bound)
    if int(value) != bound:
        value = float(np.nextafter(value, 0.0))
    return int(value)


def example_inputs(spec: TensorSpec | None) -> Any:
    """One sample of zeros, which the server accepts; None when the sample is too large to show.

    With no known input (``spec`` None) this is only a guess at the format: the model may refuse it (422).
    """
    if spec is None:
        return [[0.0]]
    shape = tuple(size or 1 for size in spec.shape)
    if math.prod(shape) > EXAMPLE_LIMIT:
        return None
    return np.zeros(shape, dtype=spec.dtype).tolist()
