"""examples/serve: fit, `ember export` to ONNX, `ember serve` on 127.0.0.1, and a stdlib client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_serve_example_exports_serves_and_answers(example, tmp_path: Path) -> None:
    out = example("serve", "--fast", "--out", str(tmp_path / "run"))
    assert (tmp_path / "run" / "digits.onnx").is_file()
    assert "GET /health -> 200 {'status': 'ok'}" in out.stdout
    assert "format onnx, input {'shape': [None, 1, 8, 8], 'dtype': 'float32'}" in out.stdout
    assert re.search(r"POST /predict \(one image\) -> 200: predicted \d, true \d", out.stdout)
    batch = re.search(r"POST /predict \(8 images\) -> 200: predicted (\[.*?\]), true", out.stdout)
    assert batch and len(batch.group(1).split(",")) == 8
    assert 'POST /predict (wrong shape) -> 422: "inputs" has shape [2]' in out.stdout
