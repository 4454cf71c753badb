"""/metrics counts what happened; /docs and /redoc work offline (every asset served locally)."""

from __future__ import annotations

import re

import pytest
from serving import LiveServer, parse_metrics, seeded_classifier

from ember.serve import create_app


def test_metrics_count_requests_by_status_latency_and_batches() -> None:
    app = create_app(seeded_classifier(), max_body_bytes=4096, max_wait_ms=0, name="clf", version="3")
    with LiveServer(app) as server, server.client() as client:
        for _ in range(3):
            assert client.post("/predict", json={"inputs": [[0.0] * 4] * 3}).status_code == 200
        for _ in range(2):
            assert client.post("/predict", json={"inputs": [[0.0] * 3]}).status_code == 422
        big = b"[" + b"0," * 3000 + b"0]"
        assert client.post("/predict", content=big, headers={"content-type": "application/json"}).status_code == 413
        assert client.get("/nowhere").status_code == 404
        client.get("/health")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE ember_requests_total counter" in text
    assert "# TYPE ember_request_duration_seconds histogram" in text
    metrics = parse_metrics(text)
    assert metrics['ember_requests_total{path="/predict",status="200"}'] == 3
    assert metrics['ember_requests_total{path="/predict",status="422"}'] == 2
    assert metrics['ember_requests_total{path="/predict",status="413"}'] == 1
    assert metrics['ember_requests_total{path="other",status="404"}'] == 1  # unknown paths share one label
    assert metrics['ember_requests_total{path="/health",status="200"}'] == 1
    assert metrics['ember_request_duration_seconds_count{path="/predict"}'] == 6
    assert metrics['ember_request_duration_seconds_bucket{path="/predict",le="+Inf"}'] == 6
    assert 0 < metrics['ember_request_duration_seconds_sum{path="/predict"}'] < 60
    assert metrics["ember_batch_size_count"] == 3 and metrics["ember_batch_size_sum"] == 3
    assert metrics['ember_batch_size_bucket{le="1"}'] == 3
    assert metrics["ember_inference_duration_seconds_count"] == 3
    assert metrics["ember_queue_size"] == 0
    assert metrics['ember_model_info{name="clf",version="3",format="module"}'] == 1
    buckets = [v for k, v in metrics.items() if k.startswith('ember_request_duration_seconds_bucket{path="/predict"')]
    assert buckets == sorted(buckets)  # cumulative


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_interactive_docs_use_only_local_assets(page: str) -> None:
    with LiveServer(create_app(seeded_classifier())) as server, server.client() as client:
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert "http://" not in html.text and "https://" not in html.text  # no CDN, no fonts
        assets = re.findall(r'(?:src|href|spec-url)="([^"]+)"|url: \'([^\']+)\'', html.text)
        urls = {a or b for a, b in assets}
        assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls
        for url in urls:
            assert url.startswith("/"), url
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 0, url
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        assert body["example"] == {"inputs": [[0.0] * 4] * 3}
        assert "[3, 4]" in body["schema"]["properties"]["inputs"]["description"]
