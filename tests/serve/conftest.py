"""Serving test fixtures: tiny models and their exported artifacts, built once per session."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serving import Classifier, seeded_classifier


@pytest.fixture
def classifier() -> Classifier:
    return seeded_classifier()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded classifier exported as .onnx, .pt2 and TorchScript."""
    directory = tmp_path_factory.mktemp("artifacts")
    model = seeded_classifier()
    paths = {"onnx": directory / "clf.onnx", "pt2": directory / "clf.pt2", "torchscript": directory / "clf.pt"}
    model.to_onnx(paths["onnx"])
    model.to_exported_program(paths["pt2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model.to_torchscript(paths["torchscript"])
    return paths
