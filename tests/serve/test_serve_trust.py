"""A .pt2 archive runs code when loaded, so it is served only when the caller says it is trusted.

The hostile archive here is a real ``torch.export.save`` file whose ``sample_inputs`` entry is replaced
by a pickle that writes a marker file when unpickled (``torch.export.load`` retries that entry with
``weights_only=False``). Nothing may create the marker unless trust was given.
"""

from __future__ import annotations

import io
import pathlib
import zipfile
from pathlib import Path

import pytest
import torch
from serving import LiveServer, seeded_classifier

from ember.cli import main
from ember.serve import create_app


class Payload:
    """Unpickling this writes ``marker``: what any code in a hostile archive could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "code from the archive ran")


def hostile_pt2(directory: Path) -> tuple[Path, Path]:
    """A .pt2 of the test classifier whose sample inputs are a pickle payload; and the payload's marker file."""
    honest = directory / "honest.pt2"
    seeded_classifier().to_exported_program(honest)
    marker = directory / "payload-ran.txt"
    payload = io.BytesIO()
    torch.save(Payload(marker), payload)
    hostile = directory / "model.pt2"
    with zipfile.ZipFile(honest) as source, zipfile.ZipFile(hostile, "w") as target:
        names = source.namelist()
        replaced = [n for n in names if n.endswith("/data/sample_inputs/model.pt")]
        assert len(replaced) == 1, names
        for name in names:
            target.writestr(name, payload.getvalue() if name in replaced else source.read(name))
    return hostile, marker


def test_a_pt2_is_refused_without_trust_and_its_code_never_runs(tmp_path: Path) -> None:
    hostile, marker = hostile_pt2(tmp_path)
    with pytest.raises(ValueError) as info:
        create_app(hostile)
    assert not marker.exists(), "the archive's code ran"
    message = str(info.value)
    assert "trusted=True" in message and "--trust-pt2" in message  # what to do
    assert "weights_only=False" in message and "runs any code" in message  # says why
    assert "ONNX" in message and "Ember checkpoint" in message  # and what to use instead
    # The file is really hostile: with trust given, loading it runs the payload.
    with pytest.raises(ValueError):
        create_app(hostile, trusted=True)
    assert marker.read_text() == "code from the archive ran"


def test_ember_serve_refuses_a_pt2_without_trust_pt2(tmp_path: Path, capsys) -> None:
    hostile, marker = hostile_pt2(tmp_path)
    assert main(["serve", str(hostile), "--port", "0"]) == 2
    assert not marker.exists(), "the archive's code ran"
    err = capsys.readouterr().err
    assert err.startswith("ember: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "--trust-pt2" in err and "weights_only=False" in err


def test_a_trusted_honest_pt2_is_served(tmp_path: Path) -> None:
    path = tmp_path / "clf.pt2"
    seeded_classifier().to_exported_program(path)
    with LiveServer(create_app(path, trusted=True)) as server, server.client() as client:
        assert client.post("/predict", json={"inputs": [[0.0] * 4] * 3}).status_code == 200


def test_serve_help_says_which_formats_are_safe_for_files_from_others(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Safe for files from others: ONNX (.onnx) and Ember checkpoints" in help_text
    assert "--trust-pt2" in help_text and "runs code when loaded" in help_text
