"""Dynamic batching: concurrent requests share forward passes, each caller gets its own rows, a bad
request fails alone, inference stays off the event loop, and shutdown finishes in-flight work."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from serving import LiveServer, Recording, parse_metrics, seeded_classifier
from torch import nn

from ember.serve import create_app
from ember.serve.batching import DynamicBatcher, QueueFull, ShuttingDown


def test_concurrent_requests_share_batches_and_get_their_own_answers() -> None:
    reference = seeded_classifier()
    model = Recording(seeded_classifier())
    app = create_app(model, max_batch_size=16, max_wait_ms=20)
    torch.manual_seed(3)
    inputs = [torch.randn(1 + i % 3, 3, 4) for i in range(64)]  # batches of 1-3 samples

    async def ask_all(server: LiveServer) -> list[httpx.Response]:
        async with server.async_client(limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*[client.post("/predict", json={"inputs": x.tolist()}) for x in inputs])

    with LiveServer(app) as server:
        responses = asyncio.run(ask_all(server))
        with server.client() as client:
            metrics = parse_metrics(client.get("/metrics").text)
    for x, response in zip(inputs, responses):
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()["outputs"], reference(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    warm_up, *sizes = model.batch_sizes  # create_app runs the model once on zeros at startup
    samples = sum(len(x) for x in inputs)
    assert warm_up == 2 and sum(sizes) == samples
    assert max(sizes) > 3  # requests were really grouped
    assert max(sizes) <= 16
    assert len(sizes) < len(inputs)
    assert metrics["ember_batch_size_sum"] == samples
    assert metrics["ember_batch_size_count"] == len(sizes)


def test_inference_runs_off_the_event_loop() -> None:
    model = Recording(seeded_classifier(), gated=True)
    with LiveServer(create_app(model)) as server:
        result: dict[str, httpx.Response] = {}
        worker = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(f"{server.url}/predict", json={"inputs": [[0.0] * 4] * 3}, timeout=30)
            )
        )
        worker.start()
        assert model.started.wait(10)  # the model is now busy with that request, held at the gate
        with server.client() as client:
            assert client.get("/health").status_code == 200  # the event loop still answers
            assert client.get("/metrics").status_code == 200
        assert "r" not in result
        model.gate.set()
        worker.join(30)
        assert result["r"].status_code == 200


class Picky(nn.Module):
    """Refuses inputs with large values; no example_input_array, so the server cannot pre-check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 1000:
            raise ValueError("values above 1000 are not supported")
        return x.sum(dim=-1, keepdim=True)


def test_a_bad_request_fails_alone_and_its_batch_mates_succeed() -> None:
    app = create_app(Picky(), max_wait_ms=50)
    good = [np.full((1, 4), i, dtype=np.float32) for i in range(10)]
    bad = [np.full((1, 4), 5000.0, dtype=np.float32) for _ in range(3)]

    async def ask_all(server: LiveServer) -> list[httpx.Response]:
        async with server.async_client() as client:
            return await asyncio.gather(*[client.post("/predict", json={"inputs": x.tolist()}) for x in good + bad])

    with LiveServer(app) as server:
        responses = asyncio.run(ask_all(server))
    for i, response in enumerate(responses[:10]):
        assert response.status_code == 200 and response.json()["outputs"] == [[4.0 * i]]
    for response in responses[10:]:
        assert response.status_code == 422
        assert "values above 1000" in response.json()["detail"]


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    reference = seeded_classifier()
    model = Recording(seeded_classifier(), delay=0.25)
    app = create_app(model, max_batch_size=1)
    inputs = [torch.randn(3, 4) for _ in range(4)]
    server = LiveServer(app).__enter__()

    async def scenario() -> list[httpx.Response]:
        async with server.async_client() as client:
            tasks = [asyncio.ensure_future(client.post("/predict", json={"inputs": x.tolist()})) for x in inputs]
            deadline = time.monotonic() + 10
            while app.state.batcher.queue_size < len(inputs) - 1:  # one running, the rest queued
                assert time.monotonic() < deadline, "requests never reached the server"
                await asyncio.sleep(0.01)
            server.server.should_exit = True  # what SIGTERM / Ctrl-C do
            return await asyncio.gather(*tasks)

    try:
        responses = asyncio.run(scenario())
    finally:
        server.stop()
    assert not server.thread.is_alive()
    for x, response in zip(inputs, responses):
        assert response.status_code == 200
        np.testing.assert_allclose(
            response.json()["outputs"], reference(x[None])[0].detach().numpy(), rtol=1e-5, atol=1e-6
        )
    assert model.batch_sizes == [2, 1, 1, 1, 1]  # the warm-up, then one request per forward
    assert not app.state.batcher.accepting
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=5)


# ---------------------------------------------------------------- the batcher on its own


def test_stop_drains_the_queue_and_then_refuses_new_work() -> None:
    gate, busy = threading.Event(), threading.Event()

    def predict(batch: np.ndarray) -> np.ndarray:
        busy.set()
        gate.wait(10)
        return batch * 2

    batcher = DynamicBatcher(predict, max_batch_size=1, max_wait_ms=0, max_queue_size=3)
    futures = [batcher.submit(np.full((1, 2), 0, dtype=np.float32))]
    assert busy.wait(10)  # the worker holds the first request; three more fill the queue
    futures += [batcher.submit(np.full((1, 2), i, dtype=np.float32)) for i in (1, 2, 3)]
    with pytest.raises(QueueFull, match="max_queue_size"):
        batcher.submit(np.zeros((1, 2), dtype=np.float32))
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    gate.set()
    stopper.join(10)
    assert [f.result(0)[0, 0] for f in futures] == [0, 2, 4, 6]
    with pytest.raises(ShuttingDown):
        batcher.submit(np.zeros((1, 2), dtype=np.float32))


def test_outputs_without_a_batch_axis_are_an_error_for_the_callers() -> None:
    batcher = DynamicBatcher(lambda batch: batch.sum(), max_wait_ms=0)
    future = batcher.submit(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="every output needs a batch axis"):
        future.result(10)
    batcher.stop()


def test_tuple_and_dict_outputs_are_split_per_request() -> None:
    batcher = DynamicBatcher(lambda b: {"double": b * 2, "pair": (b, -b)}, max_batch_size=8, max_wait_ms=30)
    futures = [batcher.submit(np.full((n, 1), n, dtype=np.float32)) for n in (1, 2, 3)]
    results = [f.result(10) for f in futures]
    batcher.stop()
    for n, result in zip((1, 2, 3), results):
        assert result["double"].tolist() == [[2.0 * n]] * n
        assert result["pair"][1].tolist() == [[-float(n)]] * n
