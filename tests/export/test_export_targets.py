"""Every export format writes to a str, an os.PathLike, a BytesIO and an open binary file — and
path targets are replaced atomically."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

FORMATS = ("onnx", "pt2", "torchscript")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}


def export(fmt: str, model: Any, target: Any) -> None:
    if fmt == "onnx":
        model.to_onnx(target)
    elif fmt == "pt2":
        model.to_exported_program(target)
    else:
        model.to_torchscript(target)


def run_exported(fmt: str, source: str | bytes, x: torch.Tensor) -> np.ndarray:
    """Load what was written (a path or the bytes) and run it on ``x``."""
    if fmt == "onnx":
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    f = source if isinstance(source, str) else io.BytesIO(source)
    if fmt == "pt2":
        return torch.export.load(f).module()(x).detach().numpy()
    return torch.jit.load(f)(x).detach().numpy()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["str", "pathlike", "bytesio", "open_file"])
def test_every_format_writes_to_every_target_kind(cnn, tmp_path: Path, fmt: str, kind: str) -> None:
    path = tmp_path / "sub" / f"model{SUFFIX[fmt]}"  # a missing parent directory is created
    x = torch.randn(3, 1, 8, 8)
    cnn.eval()
    expected = cnn(x).detach().numpy()
    cnn.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "str":
            export(fmt, cnn, str(path))
        elif kind == "pathlike":
            export(fmt, cnn, path)
        elif kind == "bytesio":
            buffer = io.BytesIO(b"")
            export(fmt, cnn, buffer)
        else:
            path.parent.mkdir(parents=True)
            with open(path, "wb") as f:
                export(fmt, cnn, f)
                assert not f.closed  # the caller's file stays open
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "BytesIO" in m or ("deprecated" in m.lower() and "onnx" in m.lower())], messages
    if kind == "bytesio":
        source: str | bytes = buffer.getvalue()
        assert len(source) > 1000
    else:
        source = str(path)
        assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary files, no sidecar
    np.testing.assert_allclose(run_exported(fmt, source, x), expected, rtol=1e-4, atol=1e-5)
    assert cnn.training and cnn.features[1].training  # the module's mode is restored


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_failing_halfway_leaves_the_old_file_and_no_temporary_files(
    cnn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    def write_half_then_fail(*args: Any, **kwargs: Any) -> None:
        path = next(a for a in [*args, *kwargs.values()] if isinstance(a, str) and a.endswith(SUFFIX[fmt]))
        Path(path).write_bytes(b"torn")
        raise RuntimeError("disk full")

    exporter = {"onnx": (torch.onnx, "export"), "pt2": (torch.export, "save"), "torchscript": (torch.jit, "save")}[fmt]
    monkeypatch.setattr(*exporter, write_half_then_fail)
    target = tmp_path / f"model{SUFFIX[fmt]}"
    target.write_bytes(b"previous version")
    with pytest.raises(RuntimeError, match="disk full"):
        export(fmt, cnn, target)
    assert target.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == [target.name]


def test_path_target_replaces_an_existing_file(cnn, tmp_path: Path) -> None:
    target = tmp_path / "model.pt2"
    target.write_bytes(b"old")
    cnn.to_exported_program(target)
    assert torch.export.load(target).module()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (42, TypeError, "str, an os.PathLike or a writable binary file-like"),
        ("", ValueError, "empty"),
    ],
)
def test_bad_targets_are_refused_before_exporting(cnn, fmt: str, target: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        export(fmt, cnn, target)


@pytest.mark.parametrize("fmt", FORMATS)
def test_text_and_read_only_files_are_refused(cnn, tmp_path: Path, fmt: str) -> None:
    with open(tmp_path / "text.out", "w") as f, pytest.raises(TypeError, match="mode 'wb'"):
        export(fmt, cnn, f)
    (tmp_path / "ro.out").write_bytes(b"")
    with open(tmp_path / "ro.out", "rb") as f, pytest.raises(ValueError, match="not writable"):
        export(fmt, cnn, f)
