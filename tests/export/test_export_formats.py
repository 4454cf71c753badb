"""torch.export (.pt2) and TorchScript exports: dynamic batch, metadata for servers, clear errors."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import torch
from export_models import PlainMLP, TinyCNN, TwoInputs

from ember.export import METADATA_FILE, to_exported_program, to_torchscript


def test_exported_program_has_a_dynamic_batch_and_ember_metadata(cnn, tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    program = cnn.to_exported_program(path)
    assert isinstance(program, torch.export.ExportedProgram)
    extra = {METADATA_FILE: ""}
    loaded = torch.export.load(path, extra_files=extra).module()
    assert json.loads(extra[METADATA_FILE]) == {
        "name": "TinyCNN",
        "format": "pt2",
        "input": {"shape": [1, 8, 8], "dtype": "float32", "batch": None},
    }
    cnn.eval()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        torch.testing.assert_close(loaded(x), cnn(x))


def test_exported_program_without_a_file_and_with_fixed_batch(cnn) -> None:
    program = to_exported_program(cnn, dynamic_batch=False)
    assert program.module()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(Exception, match="1"):  # the batch is fixed at the sample's size
        program.module()(torch.zeros(3, 1, 8, 8))


def test_exported_program_keyword_sample() -> None:
    model = TwoInputs().eval()
    program = to_exported_program(model, input_sample={"x": torch.zeros(1, 4), "y": torch.zeros(1, 3)})
    x, y = torch.randn(4, 4), torch.randn(4, 3)
    torch.testing.assert_close(program.module()(x=x, y=y), model(x, y))


def test_model_that_needs_a_fixed_batch_gets_a_helpful_error() -> None:
    class FixedBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, -1)  # only works for a batch of 2

    with pytest.raises(RuntimeError, match="dynamic_batch=False"):
        to_exported_program(FixedBatch(), input_sample=torch.zeros(2, 3))
    assert to_exported_program(FixedBatch(), input_sample=torch.zeros(2, 3), dynamic_batch=False)


@pytest.mark.parametrize("method", ["script", "trace"])
def test_torchscript_of_an_ember_module(cnn, tmp_path: Path, method: str) -> None:
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        compiled = cnn.to_torchscript(path, method=method)
        extra = {METADATA_FILE: ""}
        loaded = torch.jit.load(str(path), _extra_files=extra)
    assert isinstance(compiled, torch.jit.ScriptModule)
    assert loaded.original_name == "TinyCNN"
    assert json.loads(extra[METADATA_FILE])["input"] == {"shape": [1, 8, 8], "dtype": "float32", "batch": None}
    assert type(cnn) is TinyCNN  # the temporary TorchScript view of the class is gone
    assert cnn.training
    cnn.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), cnn(x))
    torch.testing.assert_close(compiled(x), cnn(x))


def test_torchscript_without_file_and_nested_ember_modules() -> None:
    import ember

    class Outer(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = PlainWrapper()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2

    class PlainWrapper(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.mlp = PlainMLP()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(x)

    model = Outer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = to_torchscript(model)
        traced = to_torchscript(model, method="trace", example_inputs=torch.zeros(2, 6))
    x = torch.randn(3, 6)
    torch.testing.assert_close(scripted(x), model(x))
    torch.testing.assert_close(traced(x), model(x))
    assert type(model.inner) is PlainWrapper


def test_torchscript_keeps_ember_modules_jit_lists_beside_a_subclasss_own() -> None:
    import ember

    class WithNotes(ember.Module):
        __jit_unused_properties__ = ["summary"]
        __jit_ignored_attributes__ = ["notes"]

        def __init__(self) -> None:
            super().__init__()
            self.mlp = PlainMLP()
            self.notes = {"source": object()}  # no TorchScript type

        @property
        def summary(self) -> str:
            return f"{len(self.notes)} notes"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(x)

    model = WithNotes()
    x = torch.randn(3, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = to_torchscript(model)
        traced = to_torchscript(model, method="trace", example_inputs=torch.zeros(2, 6))
    torch.testing.assert_close(scripted(x), model(x))
    torch.testing.assert_close(traced(x), model(x))
    assert type(model) is WithNotes and WithNotes.__jit_unused_properties__ == ["summary"]


def test_every_ember_module_property_is_left_uncompiled_by_torchscript() -> None:
    import ember

    properties = {name for name, value in vars(ember.Module).items() if isinstance(value, property)}
    assert properties <= set(ember.Module.__jit_unused_properties__)


def test_torchscript_argument_errors() -> None:
    with pytest.raises(ValueError, match="method='compile'; choose one of 'script', 'trace'"):
        to_torchscript(PlainMLP(), method="compile")
    with pytest.raises(ValueError, match="example_inputs is required"):
        to_torchscript(PlainMLP(), method="trace")
    with pytest.raises(TypeError, match="writable binary file-like"):
        to_torchscript(PlainMLP(), file_path=3.5)


def test_missing_sample_for_exported_program_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"input_sample is required.*example_input_array"):
        to_exported_program(PlainMLP(), io.BytesIO())
    with pytest.raises(TypeError, match="at least one tensor"):
        to_exported_program(PlainMLP(), input_sample=[1, 2, 3])
