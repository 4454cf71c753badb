"""Legal but large requests do not stall the server: JSON work runs in worker processes, samples per request
are capped (413), and /health answers promptly while four maximum-size requests run.

The latency test runs ``ember serve`` in its own process, as deployed, and compares /health under load
with an idle baseline taken in the same test: it fails on a stalled event loop (the old server stopped
answering for 0.8-3.7 s at a time, see tests/serve/health_probe.py), not on a slow machine.
"""

from __future__ import annotations

import glob
import os
import signal
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
from health_probe import max_size_body, probe, quantile
from serving import EmberServe, LiveServer, seeded_classifier

from ember.serve import create_app
from ember.serve.workers import INLINE_BYTES

JSON = {"content-type": "application/json"}


def test_health_answers_promptly_while_four_maximum_size_requests_run(artifacts, tmp_path: Path) -> None:
    limit = 4 * 2**20
    body, x = max_size_body(limit)  # as many samples as fit in the body limit, and the sample limit is that
    server = EmberServe(
        str(artifacts["pt2"]), "--trust-pt2", "--max-body-bytes", str(limit), "--max-samples", str(len(x)),
        "--max-batch-size", "1024", cwd=tmp_path,
    )  # fmt: skip
    try:
        result = probe(server.url, body)
    finally:
        server.terminate()
    expected = seeded_classifier()(torch.from_numpy(x[:100])).detach().numpy()
    for response in result.responses:
        assert isinstance(response, httpx.Response) and response.status_code == 200, response
        outputs = orjson.loads(response.content)["outputs"]
        assert len(outputs) == len(x)
        np.testing.assert_allclose(outputs[:100], expected, rtol=1e-4, atol=1e-5)
    assert len(result.under_load) >= 5, "the requests finished before /health could be asked"
    idle = max(result.baseline)
    # Generous margins over the idle baseline (a loaded 2-core machine): no stall of the event loop at all
    # (max), and nine pings in ten within the 100 ms of the baseline.
    assert max(result.under_load) < idle + 0.5, sorted(result.under_load)[-5:]
    assert quantile(result.under_load, 0.9) < idle + 0.1, sorted(result.under_load)[-5:]


def test_requests_with_more_than_max_samples_get_413() -> None:
    app = create_app(seeded_classifier(), max_samples=8)
    with LiveServer(app) as server, server.client() as client:
        assert client.get("/metadata").json()["max_samples"] == 8
        sample = [[0.5] * 4] * 3
        assert client.post("/predict", json={"inputs": [sample] * 8}).status_code == 200
        assert client.post("/predict", json={"inputs": sample}).status_code == 200  # one sample
        too_many = client.post("/predict", json={"inputs": [sample] * 9})
        assert too_many.status_code == 413
        assert "holds 9 samples; this server accepts at most 8 per request" in too_many.json()["detail"]
        big = b'{"inputs": [' + b",".join([orjson.dumps(sample)] * 2000) + b"]}"  # parsed by a worker
        assert len(big) > INLINE_BYTES
        response = client.post("/predict", content=big, headers=JSON)
        assert response.status_code == 413 and "holds 2000 samples" in response.json()["detail"]


def json_worker_pids() -> set[int]:
    """This process's children (the server here runs in a thread of the test process): its JSON workers."""
    children: set[int] = set()
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path) as f:
            children |= {int(pid) for pid in f.read().split()}
    return children


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task"), reason="reads child processes from /proc")
def test_large_bodies_are_parsed_by_worker_processes_with_the_same_answers_and_errors() -> None:
    reference = seeded_classifier()
    x = torch.randn(2000, 3, 4)
    valid = orjson.dumps({"inputs": x.numpy()}, option=orjson.OPT_SERIALIZE_NUMPY)
    rows = b",".join([b"[[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]"] * 2000)
    invalid = [
        (valid[:-10], 400, "not valid JSON"),
        (rows.replace(b"4]", b'"4"]', 1).join([b'{"inputs": [', b"]}"]), 422, "contains strings"),
        (rows.replace(b"4]", b"NaN]", 1).join([b'{"inputs": [', b"]}"]), 422, "NaN or infinity"),
        (rows.replace(b"[1, 2, 3, 4]", b"[1, 2, 3]", 1).join([b'{"inputs": [', b"]}"]), 422, "rectangular"),
        (orjson.dumps({"inputs": np.zeros((5000, 3, 4))}, option=orjson.OPT_SERIALIZE_NUMPY), 413, "at most 4096"),
    ]
    before = json_worker_pids()
    with LiveServer(create_app(reference, json_workers=1)) as server, server.client() as client:
        for body, status, message in invalid:
            assert len(body) > INLINE_BYTES
            response = client.post("/predict", content=body, headers=JSON)
            assert response.status_code == status and message in response.json()["detail"], response.text
        workers = json_worker_pids() - before
        assert len(workers) == 1, "large bodies were not parsed in a worker process"
        response = client.post("/predict", content=valid, headers=JSON)
        expected = reference(x).detach().numpy()
        np.testing.assert_allclose(response.json()["outputs"], expected, rtol=1e-5, atol=1e-6)
        os.kill(workers.pop(), signal.SIGKILL)  # a worker that dies is replaced
        response = client.post("/predict", content=valid, headers=JSON)
        assert response.status_code in (200, 500)  # the request that found it dead may fail, alone
        response = client.post("/predict", content=valid, headers=JSON)
        np.testing.assert_allclose(response.json()["outputs"], expected, rtol=1e-5, atol=1e-6)
    assert json_worker_pids() == before  # stopped with the server
