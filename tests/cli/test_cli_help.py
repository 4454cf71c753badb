"""``ember fit --help`` describes every Trainer argument in one line (from ``Trainer.__init__``'s
docstring) and does not list hundreds of torch classes under ``--model`` (issue 14, item 4)."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import docstring_parser
import pytest

import ember
from ember.cli.help import shorten_known_subclasses
from ember.cli.main import main

EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"
TRAINER_ARGS = [n for n in inspect.signature(ember.Trainer.__init__).parameters if n != "self"]


def fit_help(capsys: pytest.CaptureFixture, command: str = "fit") -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_trainer_argument_has_a_one_line_docstring():
    documented = {p.arg_name: p.description for p in docstring_parser.parse(ember.Trainer.__init__.__doc__).params}
    missing = [n for n in TRAINER_ARGS if not documented.get(n)]
    assert not missing, f"Trainer.__init__'s docstring has no Args line for {missing}"
    assert not [n for n, d in documented.items() if "\n" in d], "each description is one line"
    assert not set(documented) - set(TRAINER_ARGS), "the docstring documents arguments the Trainer does not take"


def test_fit_help_describes_every_trainer_argument(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = fit_help(capsys)
    blocks = re.split(r"\n  (?=--)", text)
    for name in TRAINER_ARGS:
        block = next((b for b in blocks if re.match(rf"--trainer\.{name}[ ,]", b)), None)
        assert block is not None, f"--trainer.{name} is not in the help"
        description = " ".join(block.split("\n", 1)[1].split()) if "\n" in block else ""
        assert description and not description.startswith("(type:"), f"--trainer.{name} has no description"


def test_model_help_does_not_list_torch_layers(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = fit_help(capsys)
    assert "torch.nn.Linear" not in text and "torch.ao." not in text
    assert re.search(r"known subclasses: ember\.Module[^;]* and \d+ more; give any class by its path\)", " ".join(text.split()))
    assert "Trainer (ember.Trainer):" in text and "Model (a torch.nn.Module):" in text
    assert len(text.splitlines()) < 260  # (402 lines before, most of them torch class names)


def test_shorten_known_subclasses():
    names = [f"torch.nn.L{i}" for i in range(20)] + ["my.Net", "ember.Module"] + [f"lib.M{i}" for i in range(15)]
    text = f"(type: Module, known subclasses: {', '.join(names)})"
    kept = ["ember.Module", "my.Net"] + [f"lib.M{i}" for i in range(10)]
    assert shorten_known_subclasses(text) == (
        f"(type: Module, known subclasses: {', '.join(kept)} and 25 more; give any class by its path)"
    )
    unchanged = "(type: Logger, known subclasses: ember.loggers.CSVLogger, ember.loggers.Logger)"
    assert shorten_known_subclasses(unchanged) == unchanged


def test_console_script_help_is_short():
    out = subprocess.run([EMBER, "fit", "--help"], capture_output=True, text=True, timeout=120, env={"COLUMNS": "80", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "--trainer.max_epochs" in out.stdout and "torch.nn.Conv2d" not in out.stdout
