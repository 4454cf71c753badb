"""The progress bar refreshes on a clock, not per step; the model summary prints on fit start."""

from __future__ import annotations

import io
import itertools
import time

import pytest
import torch
import tqdm.std
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import ModelSummary, ProgressBar
from ember.callbacks.model_summary import summarize
from ember.trainer.progress import FitProgress
from helpers import LinearModel, loader


class CountingIO(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, s):
        self.writes += 1
        return super().write(s)


class BarModel(LinearModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, prog_bar=True)
        return loss


def tiny_loader(n: int) -> DataLoader:
    x = torch.randn(n, 3)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=1)


def test_progress_bar_refreshes_on_a_clock(tmp_path, monkeypatch):
    postfix_calls = []
    original = tqdm.std.tqdm.set_postfix

    def counting_set_postfix(self, *args, **kwargs):
        postfix_calls.append(time.monotonic())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tqdm.std.tqdm, "set_postfix", counting_set_postfix)
    out = CountingIO()
    bar = ProgressBar(force=True, file=out)
    trainer = ember.Trainer(
        max_epochs=2,
        callbacks=[bar],
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    steps = 2 * 1000
    start = time.monotonic()
    trainer.fit(BarModel(), tiny_loader(1000))
    duration = time.monotonic() - start
    assert trainer.global_step == steps
    text = out.getvalue()
    assert "Epoch 0" in text and "Epoch 1" in text
    assert "loss=" in text  # the prog_bar value is shown
    assert "1000/1000" in text
    # 10 Hz: at most one refresh per 0.1 s, plus one at each epoch's end
    assert 2 <= len(postfix_calls) <= duration * 10 + 2 + 2
    gaps = [b - a for a, b in itertools.pairwise(postfix_calls)]
    assert sum(g < 0.09 for g in gaps) <= 2  # only the epoch-end refreshes come early
    assert out.writes < steps / 10


def test_progress_bar_shows_validation_and_test(tmp_path):
    out = io.StringIO()
    trainer = ember.Trainer(
        max_epochs=1,
        callbacks=[ProgressBar(force=True, file=out)],
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    model = LinearModel()
    trainer.fit(model, loader(16), loader(16))
    trainer.test(model, loader(16), verbose=False)
    text = out.getvalue()
    assert "Sanity check" in text and "Validation" in text and "Testing" in text


def test_progress_bar_is_silent_when_not_a_terminal(tmp_path):
    out = io.StringIO()
    trainer = ember.Trainer(
        max_epochs=1,
        callbacks=[ProgressBar(file=out)],
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(BarModel(), loader(16))
    assert out.getvalue() == ""


def test_bad_refresh_rate():
    with pytest.raises(ValueError, match="refresh_rate_hz"):
        ProgressBar(refresh_rate_hz=0)


def test_model_summary_prints_on_fit_start(tmp_path, capsys):
    trainer = ember.Trainer(
        max_epochs=1, enable_progress_bar=False, logger=False, enable_checkpointing=False, default_root_dir=tmp_path
    )
    trainer.fit(LinearModel(), loader(16))
    out = capsys.readouterr().out
    assert "layer" in out and "Linear" in out
    assert "4 trainable params" in out and "4 total params" in out


def test_summarize_counts_trainable_and_frozen_parameters():
    model = LinearModel()
    model.extra = torch.nn.Linear(10, 10)
    model.extra.requires_grad_(False)
    text = summarize(model)
    assert "4 trainable params" in text
    assert "110 non-trainable params" in text
    assert "114 total params" in text


def test_model_summary_max_depth_zero_prints_nothing(tmp_path, capsys):
    trainer = ember.Trainer(
        max_epochs=1,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[ModelSummary(max_depth=0)],
    )
    trainer.fit(LinearModel(), loader(16))
    assert capsys.readouterr().out == "ember: fit stopped: max_epochs=1 reached\n"  # the end-of-fit line only


# ---------------------------------------------------------------------------------------- FitProgress stop rules


def test_min_steps_alone_means_one_epoch_at_least():
    assert FitProgress(max_epochs=3, min_steps=2).min_epochs == 1  # as Lightning
    assert FitProgress(max_epochs=3, min_steps=2, min_epochs=0).min_epochs == 0
    assert FitProgress(max_epochs=3).min_epochs == 0


def test_max_time_waits_for_the_minimums():
    progress = FitProgress(max_epochs=5, min_epochs=1, max_time=0.0)
    progress.start(distributed=False)
    assert progress.stop_reason() is None and progress.should_stop  # up, but min_epochs is not reached
    assert progress.ask_at_step == 0  # still pending: asked at every step
    progress.current_epoch = 1
    assert progress.stop_reason(at_epoch_end=True) == "max_time"


def test_max_time_zero_is_allowed_and_a_negative_one_is_not():
    ember.Trainer(max_time={"seconds": 0}, logger=False)
    ember.Trainer(max_time="00:00:00:00", logger=False)
    with pytest.raises(ValueError, match="max_time"):
        ember.Trainer(max_time={"seconds": -1}, logger=False)
