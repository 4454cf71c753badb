"""``ember lr_find``: the range test on a run given as ``ember fit`` takes it; progress while it runs,
then the suggestion and the plot's path (issue 14, item 4)."""

from __future__ import annotations

import re

import pytest
from tune_procs import run_ember
from tune_tiny import write_config

from ember.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_lr_find_prints_progress_the_suggestion_and_the_plot(tmp_path):
    config = write_config(tmp_path)
    out = run_ember(
        "lr_find", "--config", config, "--trainer.default_root_dir", str(tmp_path / "run"),
        "--model.init_args.width", "2", "--num_training", "30",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    progress = re.findall(r"^lr_find: step (\d+)/30 ", out.stderr, re.M)  # not a terminal: plain lines
    assert progress == [str(n) for n in range(3, 31, 3)]
    assert re.search(r"^lr_find: 30 of 30 steps \(done\)$", out.stderr, re.M)
    suggestion = re.search(r"^Suggested learning rate: (\S+)$", out.stdout, re.M)
    assert suggestion and 1e-8 <= float(suggestion.group(1)) <= 1.0
    plot = tmp_path / "run" / "lr_find.png"
    assert f"Plot: {plot}" in out.stdout and plot.read_bytes()[:8] == PNG
    assert f"--model.init_args.lr {suggestion.group(1)}" in out.stdout
    assert not (tmp_path / "run" / "ember_logs").exists()  # nothing trained for real, nothing logged


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min_lr", "1", "--max_lr", "0.1"], "min_lr=1.0 must be below max_lr=0.1"),
        (["--mode", "cubic"], "cubic"),
        (["--trainer.max_epochs", "-5"], "max_epochs=-5"),
        (["--num_training", "1"], "num_training=1 must be an integer >= 2"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, extra, message):
    status = main(["lr_find", "--config", write_config(tmp_path), "--plot", str(tmp_path / "p.png"), *extra])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("ember: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()
