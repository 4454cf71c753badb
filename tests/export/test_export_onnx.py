"""ONNX export, checked by running the file in ONNX Runtime against the PyTorch model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_models import PlainMLP, TwoInputs

from ember.export import to_onnx


def session(source: str | bytes) -> ort.InferenceSession:
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def test_batch_one_example_gives_a_dynamic_batch_axis_and_matches_pytorch(cnn, tmp_path: Path, capfd) -> None:
    path = tmp_path / "model.onnx"
    program = cnn.to_onnx(path)  # example_input_array has a batch of 1
    assert isinstance(program, torch.onnx.ONNXProgram)
    assert capfd.readouterr().out == ""  # verbose=False: no progress lines
    sess = session(str(path))
    batch_dim = sess.get_inputs()[0].shape[0]
    assert isinstance(batch_dim, str)  # symbolic, not a fixed 1 or 2
    cnn.eval()
    for batch in (1, 2, 7):  # 7: a size never seen at export time
        x = torch.randn(batch, 1, 8, 8)
        (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        np.testing.assert_allclose(out, cnn(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_explicit_sample_for_a_plain_module_and_single_file(tmp_path: Path) -> None:
    model = PlainMLP().eval()
    path = tmp_path / "mlp.onnx"
    to_onnx(model, path, torch.zeros(1, 6))
    assert not (tmp_path / "mlp.onnx.data").exists()
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(5, 6)
    sess = session(str(path))
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_extra_keyword_arguments_reach_torch_onnx_export(cnn) -> None:
    buffer = io.BytesIO()
    cnn.to_onnx(buffer, input_names=["image"], output_names=["logits"], opset_version=18)
    model = onnx.load_from_string(buffer.getvalue())
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert {o.domain: o.version for o in model.opset_import}[""] == 18


def test_dynamic_batch_false_keeps_the_sample_batch(cnn) -> None:
    buffer = io.BytesIO()
    cnn.to_onnx(buffer, dynamic_batch=False)
    assert session(buffer.getvalue()).get_inputs()[0].shape == [1, 1, 8, 8]


def test_several_inputs_share_one_dynamic_batch_axis() -> None:
    model = TwoInputs().eval()
    buffer = io.BytesIO()
    to_onnx(model, buffer, (torch.zeros(1, 4), torch.zeros(1, 3)))
    sess = session(buffer.getvalue())
    x, y = torch.randn(3, 4), torch.randn(3, 3)
    names = [i.name for i in sess.get_inputs()]
    (out,) = sess.run(None, dict(zip(names, [x.numpy(), y.numpy()])))
    np.testing.assert_allclose(out, model(x, y).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_missing_input_sample_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_sample is required: PlainMLP has no example_input_array"):
        to_onnx(PlainMLP(), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_external_data_needs_a_path_target(cnn) -> None:
    with pytest.raises(ValueError, match="external_data=True"):
        cnn.to_onnx(io.BytesIO(), external_data=True)


def test_external_data_sidecar_lands_next_to_the_model(cnn, tmp_path: Path) -> None:
    path = tmp_path / "big.onnx"
    cnn.to_onnx(path, external_data=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "big.onnx" and len(files) == 2 and files[1].startswith("big.onnx")  # model + its data file
    cnn.eval()
    x = torch.randn(3, 1, 8, 8)
    sess = session(str(path))
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, cnn(x).detach().numpy(), rtol=1e-4, atol=1e-5)
