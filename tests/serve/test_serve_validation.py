"""Every kind of bad input gets a 4xx whose message says what was expected; none reaches a 500."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from serving import LiveServer, seeded_classifier

from ember.serve import create_app
from ember.serve.spec import TensorSpec
from ember.serve.validation import InvalidInput, to_batch

EXPECTED = "expected one sample of shape [3, 4] or a batch of shape [n, 3, 4], dtype float32"
ROW = [0.5, 1.0, -2.0, 3.0]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(create_app(seeded_classifier(), max_body_bytes=64 * 1024)) as live:
        yield live


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "body is empty"),
        (b'{"inputs": [1, 2', 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[" * 20_000 + b"]" * 20_000, 400, "not valid JSON"),
        (b"[1, 2, 3]", 422, 'JSON object with an "inputs" field'),
        (b'{"input": [[1, 2, 3, 4]]}', 422, 'JSON object with an "inputs" field'),
        (b'{"inputs": "a picture"}', 422, "got a string"),
        (b'{"inputs": null}', 422, "got null"),
        (b'{"inputs": {"x": 1}}', 422, "got an object"),
        (b'{"inputs": true}', 422, "got a boolean"),
        (b'{"inputs": []}', 422, "is empty"),
        (b'{"inputs": [[]]}', 422, "is empty"),
        (b'{"inputs": 3.5}', 422, "has shape []"),
        (b'{"inputs": [[1, 2], [3, 4]]}', 422, "has shape [2, 2]"),
        (b'{"inputs": [1, 2, 3, 4]}', 422, "has shape [4]"),
        (b'{"inputs": [[[[1, 2, 3, 4]]]]}', 422, "has shape [1, 1, 1, 4]"),
        (b'{"inputs": [[1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 4]]}', 422, "rectangular"),
        (b'{"inputs": [[1, 2, 3, "4"], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "contains strings"),
        (b'{"inputs": [[1, 2, 3, null], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "contains null"),
        (b'{"inputs": [[1, 2, 3, true], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "contains true/false"),
        (b'{"inputs": [[1, 2, 3, {}], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "not numbers"),
        (b'{"inputs": [[1, 2, 3, NaN], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "NaN or infinity"),
        (b'{"inputs": [[1, 2, 3, Infinity], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "NaN or infinity"),
        (b'{"inputs": [[1, 2, 3, -1e999], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "NaN or infinity"),
        (b'{"inputs": [[1, 2, 3, 1e39], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422, "outside the float32 range"),
        (b'{"inputs": [[1, 2, 3, ' + b"9" * 400 + b"], [1, 2, 3, 4], [1, 2, 3, 4]]}", 422, "too large"),
        (b'{"inputs": [' + b"0," * 40_000 + b"0]}", 413, "at most 65536"),
    ],
)
def test_invalid_input_is_a_4xx_saying_what_was_expected(
    server: LiveServer, body: bytes, status: int, message: str
) -> None:
    with server.client() as client:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail
    if status == 422 and "shape" in message:
        assert EXPECTED in detail


def test_oversized_body_without_content_length_is_cut_off(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(2000):
            yield b"0.0," * 20
        yield b"0]}"

    with server.client() as client:
        # chunked transfer: no Content-Length
        response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    with server.client() as client:  # and the server is still fine
        assert client.post("/predict", json={"inputs": [ROW] * 3}).status_code == 200


def test_a_model_without_a_known_input_refuses_bad_input_with_422() -> None:
    model = seeded_classifier()
    model.example_input_array = None  # nothing tells the server what to expect
    with LiveServer(create_app(model, max_wait_ms=30)) as server, server.client() as client:
        assert client.get("/metadata").json()["input"] is None
        bad = client.post("/predict", json={"inputs": [[1.0, 2.0]]})
        assert bad.status_code == 422
        assert "the model could not process this input" in bad.json()["detail"]
        good = client.post("/predict", json={"inputs": [[ROW] * 3]})
        assert good.status_code == 200


def test_nan_is_accepted_when_allowed() -> None:
    app = create_app(seeded_classifier(), allow_nan=True)
    with LiveServer(app) as server, server.client() as client:
        body = b'{"inputs": [[1, 2, 3, NaN], [1, 2, 3, 4], [1, 2, 3, 4]]}'
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert all(v is None for v in response.json()["outputs"])  # NaN outputs become JSON null


@pytest.mark.parametrize(
    ("inputs", "dtype", "expected"),
    [
        ([[1, 2], [3, 4]], np.int64, np.array([[1, 2], [3, 4]])),
        ([[1.0, 2.0], [3, 4]], np.int64, np.array([[1, 2], [3, 4]])),
        ([[True, False], [False, True]], np.bool_, np.array([[True, False], [False, True]])),
        ([[1, 0], [0, 1]], np.bool_, np.array([[True, False], [False, True]])),
    ],
)
def test_integer_and_boolean_models_accept_matching_inputs(inputs: list, dtype: type, expected: np.ndarray) -> None:
    batch, single = to_batch(inputs, TensorSpec((2,), np.dtype(dtype)))
    assert batch.dtype == dtype and not single
    np.testing.assert_array_equal(batch, expected)


@pytest.mark.parametrize(
    ("inputs", "dtype", "message"),
    [
        ([[1.5, 2]], np.int64, "must be integers"),
        ([[1, 2**40]], np.int32, "outside the int32 range"),
        ([[2, 0]], np.bool_, "true/false or 0/1"),
        ([[True, 1]], np.float32, "contains true/false"),
    ],
)
def test_integer_and_boolean_models_refuse_the_rest(inputs: list, dtype: type, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        to_batch(inputs, TensorSpec((2,), np.dtype(dtype)))
    assert info.value.status_code == 422


def test_unknown_shape_takes_a_batch_of_float32() -> None:
    batch, single = to_batch([[1, 2, 3]], None)
    assert batch.dtype == np.float32 and batch.shape == (1, 3) and not single
    assert torch.from_numpy(batch).is_contiguous()
