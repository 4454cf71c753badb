"""The progress bar does not leave a line per epoch (Lightning's ``TQDMProgressBar(leave=False)``),
and output that is not a terminal gets plain heartbeat lines, never a flood (issue 14, item 3)."""

from __future__ import annotations

import io
import re

import pytest

from ember.callbacks import ProgressBar
from helpers import LinearModel, loader, quiet_trainer


class BarModel(LinearModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, prog_bar=True)
        return loss


def fit_with(bar: ProgressBar, tmp_path, epochs: int = 20, val: bool = False) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, callbacks=[bar], num_sanity_val_steps=0)
    trainer.fit(BarModel(), loader(16, batch_size=4), loader(8, batch_size=4) if val else None)


def finished_lines(text: str) -> list[str]:
    """What a terminal shows at the end: ``text`` played with carriage returns, newlines and tqdm's
    cursor-up moves (the bars below the first one), blank lines dropped."""
    screen: list[list[str]] = [[]]
    row = col = 0
    for token in re.split(r"(\r|\n|\x1b\[A)", text):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            screen += [[] for _ in range(row + 1 - len(screen))]
        elif token == "\x1b[A":
            row = max(0, row - 1)
        else:
            line = screen[row]
            line += [" "] * (col + len(token) - len(line))
            line[col : col + len(token)] = token
            col += len(token)
    return [text for line in screen if (text := "".join(line).rstrip())]


def test_one_bar_redrawn_for_every_epoch(tmp_path):
    out = io.StringIO()
    fit_with(ProgressBar(force=True, file=out), tmp_path, val=True)
    text = out.getvalue()
    assert "Epoch 0" in text and "Epoch 19" in text and "Validation" in text
    lines = finished_lines(text)
    assert len(lines) == 1 and lines[0].startswith("Epoch 19") and "4/4" in lines[0] and "loss=" in lines[0]


def test_leave_true_keeps_a_line_per_epoch(tmp_path):
    out = io.StringIO()
    fit_with(ProgressBar(force=True, file=out, leave=True), tmp_path)
    lines = finished_lines(out.getvalue())
    assert [line.split(":")[0] for line in lines] == [f"Epoch {e}" for e in range(20)]


def test_not_a_terminal_short_run_is_silent(tmp_path):
    out = io.StringIO()  # not a tty
    fit_with(ProgressBar(file=out), tmp_path)
    assert out.getvalue() == ""


def test_not_a_terminal_gets_plain_lines_at_the_interval(tmp_path):
    out = io.StringIO()
    fit_with(ProgressBar(file=out, line_interval_s=0), tmp_path, epochs=3, val=True)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no redraws, no cursor movement
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch 0", "Epoch 1", "Epoch 2"]
    assert all(": 4 batches, loss=" in line for line in lines)  # the prog_bar values, as on the bar


def test_bad_line_interval():
    with pytest.raises(ValueError, match="line_interval_s"):
        ProgressBar(line_interval_s=-1)
