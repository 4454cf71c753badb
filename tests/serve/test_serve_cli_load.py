"""``ember serve`` as users run it (the console script in a subprocess): a CI-sized load test with
valid and invalid requests, a checkpoint served with ``--model``, and SIGTERM during traffic."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from serving import EmberServe, seeded_classifier, trained_checkpoint

from ember.cli import main

BODY_LIMIT = 64 * 1024

# (body, expected status) for each kind of invalid request
INVALID: list[tuple[bytes, int]] = [
    (b'{"inputs": [[1, 2], [3, 4]]}', 422),
    (b'{"inputs": "x"}', 422),
    (b'{"inputs": [[1, 2, 3, NaN], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422),
    (b'{"inputs": [[1, 2, 3, true], [1, 2, 3, 4], [1, 2, 3, 4]]}', 422),
    (b'{"inputs": []}', 422),
    (b'{"values": [1]}', 422),
    (b'{"inputs": [[1, 2', 400),
    (b"", 400),
    (b'{"inputs": [' + b"0.0," * 20_000 + b"0]}", 413),
]


@pytest.fixture(scope="module")
def pt2_server(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServe]:
    """One server for the load test, then the SIGTERM test (which ends it; file order runs it last)."""
    cwd = tmp_path_factory.mktemp("serve")
    server = EmberServe(
        str(artifacts["pt2"]), "--trust-pt2", "--max-body-bytes", str(BODY_LIMIT), "--max-wait-ms", "2", cwd=cwd
    )
    try:
        yield server
    finally:
        server.terminate()


def make_requests(n: int, seed: int) -> list[tuple[bytes, int, np.ndarray | None]]:
    """``n`` requests, about 30% invalid: (body, expected status, input for valid ones)."""
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        if rng.random() < 0.3:
            body, status = rng.choice(INVALID)
            requests.append((body, status, None))
        else:
            rows = rng.randint(1, 4)
            x = np.asarray(
                [[[rng.uniform(-3, 3) for _ in range(4)] for _ in range(3)] for _ in range(rows)], np.float32
            )
            single = rows == 1 and rng.random() < 0.5
            inputs = x[0].tolist() if single else x.tolist()
            requests.append(((b'{"inputs": %s}' % str(inputs).encode()), 200, x))
    return requests


async def fire(
    url: str, requests: list[tuple[bytes, int, Any]], concurrency: int, done: list[Any] | None = None
) -> list[httpx.Response | Exception]:
    """Send every request, ``concurrency`` at a time; each outcome is also appended to ``done``."""
    done = [] if done is None else done
    limit = asyncio.Semaphore(concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(body: bytes) -> httpx.Response | Exception:
            async with limit:
                try:
                    outcome: Any = await client.post("/predict", content=body, headers=headers)
                except httpx.TransportError as err:
                    outcome = err
                done.append(outcome)
                return outcome

        return await asyncio.gather(*[one(body) for body, _, _ in requests])


def check(responses: list[Any], requests: list[tuple[bytes, int, Any]], reference: torch.nn.Module) -> None:
    for response, (_, status, x) in zip(responses, requests):
        assert isinstance(response, httpx.Response), response
        assert response.status_code == status, response.text
        if x is not None:
            outputs = np.asarray(response.json()["outputs"]).reshape(len(x), 5)
            np.testing.assert_allclose(outputs, reference(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
        else:
            assert response.json()["detail"]


def test_load_1000_mixed_requests_64_concurrent(pt2_server: EmberServe) -> None:
    reference = seeded_classifier()
    warm_up = make_requests(100, seed=1)
    check(asyncio.run(fire(pt2_server.url, warm_up, 64)), warm_up, reference)
    rss_after_warm_up = pt2_server.rss_bytes()
    requests = make_requests(1000, seed=2)
    responses = asyncio.run(fire(pt2_server.url, requests, 64))
    check(responses, requests, reference)
    assert not [r for r in responses if r.status_code >= 500]
    growth = pt2_server.rss_bytes() - rss_after_warm_up
    assert growth < 50 * 2**20, f"server RSS grew by {growth / 2**20:.1f} MB"
    metrics = httpx.get(f"{pt2_server.url}/metrics").text
    ok = sum(1 for _, status, _ in warm_up + requests if status == 200)
    assert f'ember_requests_total{{path="/predict",status="200"}} {ok}' in metrics


def test_sigterm_during_traffic_answers_every_accepted_request(pt2_server: EmberServe) -> None:
    reference = seeded_classifier()
    requests = [r for r in make_requests(400, seed=3) if r[1] == 200]

    async def traffic_then_sigterm() -> list[Any]:
        done: list[Any] = []
        task = asyncio.ensure_future(fire(pt2_server.url, requests, 32, done))
        deadline = time.monotonic() + 60
        while len(done) < 20 and time.monotonic() < deadline:  # traffic is flowing
            await asyncio.sleep(0.01)
        pt2_server.process.send_signal(signal.SIGTERM)
        return await task

    responses = asyncio.run(traffic_then_sigterm())
    # uvicorn re-raises the signal once the graceful shutdown is done, so the exit shows SIGTERM
    assert pt2_server.terminate() == -signal.SIGTERM
    answered = [(r, q) for r, q in zip(responses, requests) if isinstance(r, httpx.Response)]
    assert len(answered) >= 20
    check([r for r, _ in answered], [q for _, q in answered], reference)  # all 200 and correct


def test_serve_a_checkpoint_with_the_class_named_on_the_command_line(tmp_path: Path) -> None:
    _, model = trained_checkpoint(tmp_path, seed=5)
    server = EmberServe("clf.ckpt", "--model", "serving.Classifier", "--task", "classification", cwd=tmp_path)
    try:
        x = torch.randn(2, 3, 4)
        answer = httpx.post(f"{server.url}/predict", json={"inputs": x.tolist()}, timeout=30).json()
        metadata = httpx.get(f"{server.url}/metadata").json()
    finally:
        assert server.terminate() == -signal.SIGTERM
    expected = model.eval()(x).detach()
    np.testing.assert_allclose(answer["outputs"], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert answer["predictions"] == expected.argmax(1).tolist()
    assert (metadata["name"], metadata["format"], metadata["task"]) == ("Classifier", "checkpoint", "classification")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clf.ckpt"], "--model pkg.MyModule"),
        (["clf.ckpt", "--model", "serving.Nope"], "has no class 'Nope'"),
        (["missing.onnx"], "no such file"),
        (["clf.ckpt", "--max-batch-size", "0", "--model", "serving.Classifier"], "max_batch_size=0"),
        (["clf.ckpt", "--task", "regression"], "task"),
    ],
)
def test_serve_cli_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, args: list[str], message: str
) -> None:
    (tmp_path / "clf.ckpt").write_bytes(b"not really")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
