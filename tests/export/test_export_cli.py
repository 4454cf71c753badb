"""``ember export CKPT --format ... --output ... --model ...`` on a real checkpoint written by the Trainer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from export_models import TinyCNN
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.cli import main

HERE = Path(__file__).resolve().parent
EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyCNN]:
    """A TinyCNN(channels=3) trained for two steps and saved by the Trainer, and the trained model."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("ckpt")
    model = TinyCNN(channels=3)
    data = DataLoader(TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))), batch_size=8)
    trainer = ember.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=directory,
    )  # fmt: skip
    trainer.fit(model, data)
    path = directory / "model.ckpt"
    trainer.save_checkpoint(path)
    return path, model.eval()


def run_exported(path: Path, x: torch.Tensor) -> np.ndarray:
    if path.suffix == ".onnx":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if path.suffix == ".pt2":
        return torch.export.load(path).module()(x).detach().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))(x).detach().numpy()


@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("pt2", ".pt2"), ("torchscript", ".pt")])
def test_export_checkpoint_in_every_format(checkpoint, tmp_path: Path, fmt: str, suffix: str, capsys) -> None:
    ckpt, trained = checkpoint
    output = tmp_path / f"exported{suffix}"
    code = main(["export", str(ckpt), "--model", "export_models.TinyCNN", "--format", fmt, "--output", str(output)])
    assert code == 0, capsys.readouterr().err
    x = torch.randn(3, 1, 8, 8)
    np.testing.assert_allclose(run_exported(output, x), trained(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_console_script_default_output_next_to_the_checkpoint(checkpoint, tmp_path: Path) -> None:
    ckpt = tmp_path / "copy.ckpt"
    shutil.copy(checkpoint[0], ckpt)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [EMBER, "export", str(ckpt), "--format", "pt2", "--model", "export_models.TinyCNN"],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    x = torch.randn(2, 1, 8, 8)
    np.testing.assert_allclose(
        run_exported(tmp_path / "copy.pt2", x), checkpoint[1](x).detach().numpy(), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite", "--model", "export_models.TinyCNN"], "format"),
        (["--format", "onnx", "--model", "nowhere.Model"], "cannot import 'nowhere'"),
        (["--format", "onnx", "--model", "export_models.Missing"], "has no class 'Missing'"),
        (["--format", "onnx", "--model", "export_models.PlainMLP"], "has no load_from_checkpoint"),
        (["--format", "onnx"], "model"),
    ],
)
def test_bad_export_arguments_exit_2_with_a_message(checkpoint, args: list[str], message: str, capsys) -> None:
    assert main(["export", str(checkpoint[0]), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_checkpoint_file(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope.ckpt"), "--format", "onnx", "--model", "export_models.TinyCNN"]) == 2
    assert "no such file" in capsys.readouterr().err


class UnscriptableCNN(TinyCNN):
    """TinyCNN whose forward TorchScript cannot compile (a variable number of arguments); tracing works."""

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def test_a_model_torchscript_cannot_compile_suggests_method_trace(checkpoint, tmp_path: Path, capsys) -> None:
    ckpt, trained = checkpoint
    output = tmp_path / "scripted.pt"
    args = ["export", str(ckpt), "--model", "test_export_cli.UnscriptableCNN", "--format", "torchscript"]
    assert main([*args, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ember: error: --format torchscript: torch.jit.script cannot compile UnscriptableCNN")
    assert "try --method trace" in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line
    assert not output.exists()
    # the suggestion works
    assert main([*args, "--output", str(output), "--method", "trace"]) == 0, capsys.readouterr().err
    x = torch.randn(2, 1, 8, 8)
    np.testing.assert_allclose(run_exported(output, x), trained(x).detach().numpy(), rtol=1e-4, atol=1e-5)
