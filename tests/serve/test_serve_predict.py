"""A real server answers /predict, /metadata and /health correctly for every kind of model source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from serving import Classifier, LiveServer, seeded_classifier, trained_checkpoint

from ember.serve import create_app


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Classifier]:
    path, model = trained_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=1)
    return path, model.eval()


def source_and_reference(
    kind: str, artifacts: dict[str, Path], checkpoint: Any
) -> tuple[Any, dict[str, Any], Classifier]:
    if kind == "module":
        return seeded_classifier(), {}, seeded_classifier()
    if kind == "checkpoint":
        return checkpoint[0], {"model_class": Classifier}, checkpoint[1]
    return artifacts[kind], {"trusted": kind == "pt2"}, seeded_classifier()


@pytest.mark.parametrize("kind", ["module", "onnx", "pt2", "torchscript", "checkpoint"])
def test_outputs_match_the_model_for_one_sample_and_a_batch(artifacts, checkpoint, kind: str) -> None:
    source, options, reference = source_and_reference(kind, artifacts, checkpoint)
    with LiveServer(create_app(source, **options)) as server, server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        metadata = client.get("/metadata").json()
        assert metadata["input"] == {"shape": [None, 3, 4], "dtype": "float32"}
        assert metadata["output"] == {"shape": [None, 5], "dtype": "float32"}
        assert metadata["format"] == {"module": "module", "checkpoint": "checkpoint"}.get(kind, kind)
        assert metadata["name"] == ("clf" if kind in ("onnx",) else "Classifier")
        x = torch.randn(6, 3, 4)
        expected = reference(x).detach().numpy()
        single = client.post("/predict", json={"inputs": x[0].tolist()})
        assert single.status_code == 200, single.text
        np.testing.assert_allclose(single.json()["outputs"], expected[0], rtol=1e-4, atol=1e-5)
        batch = client.post("/predict", json={"inputs": x.tolist()})
        assert batch.status_code == 200, batch.text
        np.testing.assert_allclose(batch.json()["outputs"], expected, rtol=1e-4, atol=1e-5)
        assert set(batch.json()) == {"outputs"}


def test_classification_adds_predictions_and_probabilities(classifier) -> None:
    app = create_app(classifier, task="classification", name="digits", version="7")
    with LiveServer(app) as server, server.client() as client:
        x = torch.randn(4, 3, 4)
        logits = classifier(x).detach()
        answer = client.post("/predict", json={"inputs": x.tolist()}).json()
        assert answer["predictions"] == logits.argmax(1).tolist()
        np.testing.assert_allclose(answer["probabilities"], logits.softmax(1).numpy(), rtol=1e-5, atol=1e-6)
        one = client.post("/predict", json={"inputs": x[2].tolist()}).json()
        assert one["predictions"] == int(logits[2].argmax())
        assert abs(sum(one["probabilities"]) - 1) < 1e-6
        metadata = client.get("/metadata").json()
        assert (metadata["name"], metadata["version"], metadata["task"]) == ("digits", "7", "classification")


def test_request_bigger_than_max_batch_size_runs_in_chunks(classifier) -> None:
    with LiveServer(create_app(classifier, max_batch_size=4)) as server, server.client() as client:
        x = torch.randn(11, 3, 4)
        answer = client.post("/predict", json={"inputs": x.tolist()}).json()
        np.testing.assert_allclose(answer["outputs"], classifier(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_fixed_batch_export_is_padded(tmp_path: Path) -> None:
    model = seeded_classifier()
    model.to_exported_program(tmp_path / "fixed.pt2", input_sample=torch.zeros(4, 3, 4), dynamic_batch=False)
    app = create_app(tmp_path / "fixed.pt2", trusted=True)
    with LiveServer(app) as server, server.client() as client:
        assert client.get("/metadata").json()["input"]["shape"] == [4, 3, 4]
        x = torch.randn(6, 3, 4)  # 4 + 2 rows, the second chunk padded to 4
        answer = client.post("/predict", json={"inputs": x.tolist()}).json()
        np.testing.assert_allclose(answer["outputs"], model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_checkpoint_needs_its_class_named_by_the_caller(checkpoint) -> None:
    with pytest.raises(ValueError, match="model_class"):
        create_app(checkpoint[0])
    with pytest.raises(TypeError, match=r"ember\.Module subclass"):
        create_app(checkpoint[0], model_class=torch.nn.Linear)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"task": "regression"}, ValueError, "task='regression'; choose None or 'classification'"),
        ({"max_batch_size": 0}, ValueError, "max_batch_size=0; expected an integer >= 1"),
        ({"max_wait_ms": -1}, ValueError, "max_wait_ms=-1"),
        ({"max_body_bytes": 1.5}, ValueError, "max_body_bytes=1.5"),
    ],
)
def test_bad_options_are_refused_with_the_argument_named(
    classifier, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        create_app(classifier, **kwargs)


def test_bad_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        create_app(tmp_path / "missing.onnx")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected a \.onnx, \.pt2, TorchScript"):
        create_app(tmp_path / "model.h5")
    (tmp_path / "notscript.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        create_app(tmp_path / "notscript.pt")
    (tmp_path / "broken.pt2").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a torch\.export \(\.pt2\) archive"):
        create_app(tmp_path / "broken.pt2", trusted=True)
    with pytest.raises(TypeError, match="model_or_path must be"):
        create_app(42)


def test_models_with_several_inputs_are_refused_at_startup(tmp_path: Path) -> None:
    class TwoInputs(torch.nn.Module):
        example_input_array = (torch.zeros(1, 2), torch.zeros(1, 2))

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + y

    with pytest.raises(ValueError, match="holds 2 inputs; ember serve feeds models with one input tensor"):
        create_app(TwoInputs())
    torch.export.save(torch.export.export(TwoInputs(), TwoInputs.example_input_array), tmp_path / "two.pt2")
    with pytest.raises(ValueError, match="takes 2 inputs"):
        create_app(tmp_path / "two.pt2", trusted=True)


def test_missing_serving_dependency_names_the_extra(classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # makes `import fastapi_offline` fail
    with pytest.raises(ImportError, match=r'pip install "ember\[serve\]"'):
        create_app(classifier)


def test_import_ember_does_not_import_serving_or_onnx() -> None:
    code = (
        "import sys, ember, ember.serve, ember.export; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'onnx', 'onnxruntime', 'onnxscript', 'starlette')]; "
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
