"""The HTTP contract: JSON bodies only (415), an OpenAPI schema that states the input's shape and dtype,
whose example and schema-generated requests the server accepts, and every answer documented."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from serving import LiveServer, seeded_classifier
from torch import nn

from ember.serve import create_app

GOOD = b'{"inputs": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]}'


CONTENT_TYPES = [
    ("application/json", 200),
    ("application/json; charset=utf-8", 200),
    ("Application/JSON", 200),
    ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415),  # what `curl -d` and an HTML form send
    ("multipart/form-data; boundary=x", 415),
    (None, 415),
]


def test_only_json_bodies_are_accepted() -> None:
    with LiveServer(create_app(seeded_classifier())) as server, server.client() as client:
        for content_type, status in CONTENT_TYPES:
            headers = {"content-type": content_type} if content_type else {}
            response = client.post("/predict", content=GOOD, headers=headers)
            assert response.status_code == status, (content_type, response.text)
            if status == 415:
                assert 'send "Content-Type: application/json"' in response.json()["detail"]


class Image(nn.Module):
    """1x8x8 inputs (64 numbers per sample: more than the old docs' example limit) -> 3 outputs."""

    example_input_array = torch.zeros(1, 1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3] * 2


class Tokens(nn.Module):
    """int64 token ids, 5 per sample -> their sum."""

    example_input_array = torch.zeros(1, 5, dtype=torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


MODELS = {
    "classifier": (seeded_classifier, [3, 4], "number", "float32"),
    "image": (Image, [1, 8, 8], "number", "float32"),
    "tokens": (Tokens, [5], "integer", "int64"),
}


def sample_schema_shape(schema: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """The dimensions a nested array schema fixes (minItems == maxItems), and its leaf schema."""
    shape = []
    while schema.get("type") == "array":
        assert schema["minItems"] == schema["maxItems"], schema
        shape.append(schema["minItems"])
        schema = schema["items"]
    return shape, schema


def instance(schema: dict[str, Any], rng: random.Random) -> Any:
    """A random value valid under ``schema`` (the subset the server's schema uses), extremes included."""
    if "anyOf" in schema:
        return instance(rng.choice(schema["anyOf"]), rng)
    kind = schema["type"]
    if kind == "array":
        size = rng.randint(schema["minItems"], min(schema.get("maxItems", 3), schema["minItems"] + 2))
        return [instance(schema["items"], rng) for _ in range(size)]
    if kind == "integer":
        return rng.choice([schema["minimum"], schema["maximum"], 0, rng.randint(-1000, 1000)])
    if kind == "number":
        return rng.choice([schema["minimum"], schema["maximum"], 0.0, rng.uniform(-1e6, 1e6)])
    assert kind == "boolean"
    return rng.random() < 0.5


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_schema_states_shape_and_dtype_and_the_server_accepts_its_requests(model: str) -> None:
    make, shape, json_type, dtype = MODELS[model]
    with LiveServer(create_app(make(), max_samples=4)) as server, server.client() as client:
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        inputs = body["schema"]["properties"]["inputs"]
        sample, batch = inputs["anyOf"]
        sample_shape, leaf = sample_schema_shape(sample)
        assert sample_shape == shape
        assert (leaf["type"], leaf["format"]) == (json_type, dtype)
        assert batch["items"] == sample and (batch["minItems"], batch["maxItems"]) == (1, 4)
        assert f"one sample of shape {shape}" in inputs["description"]
        assert f"dtype {dtype}" in inputs["description"]
        # "Try it out" sends the example: the server accepts it
        example = client.post("/predict", json=body["example"])
        assert example.status_code == 200, example.text
        # and so does every request generated from the schema
        rng = random.Random(0)
        for _ in range(20):
            request = {"inputs": instance(inputs, rng)}
            response = client.post("/predict", json=request)
            assert response.status_code == 200, (request, response.text)


def test_every_answer_is_documented_with_its_media_type() -> None:
    with LiveServer(create_app(seeded_classifier())) as server, server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    predict = paths["/predict"]["post"]["responses"]
    for status in ("200", "400", "408", "413", "415", "422", "500", "503"):
        assert status in predict, status
        assert list(predict[status]["content"]) == ["application/json"], status
    assert predict["400"]["content"]["application/json"]["schema"]["required"] == ["detail"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert "503" in paths["/health"]["get"]["responses"]
