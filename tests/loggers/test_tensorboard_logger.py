"""TensorBoardLogger on its own: values, steps and hyperparameters read back from the event files
with tensorboard's EventAccumulator; versions, Ignite's log_dir form, background writing, resume."""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch
import yaml
from logger_readback import tb_scalars

from ember.loggers import TensorBoardLogger, TensorboardLogger
from ember.loggers import base as logger_base


def test_scalars_tensors_and_numbers_with_their_steps(tmp_path):
    tb = TensorBoardLogger(tmp_path, name="run")
    tb.log_metrics({"loss": torch.tensor(0.5), "acc": 0.25}, step=1)
    tb.log_metrics({"loss": torch.tensor([1.5], dtype=torch.float64)}, step=2)
    tb.log_metrics({"n": 3}, step=7)
    tb.save()
    assert tb.log_dir == str(tmp_path / "run" / "version_0")
    scalars = tb_scalars(tb.log_dir)
    assert scalars == {"loss": [(1, 0.5), (2, 1.5)], "acc": [(1, 0.25)], "n": [(7, 3.0)]}
    tb.finalize("success")


def test_versions_auto_increment_and_explicit_versions(tmp_path):
    first = TensorBoardLogger(tmp_path, name="exp")
    first.log_metrics({"x": 1.0}, 0)
    first.finalize("success")
    second = TensorBoardLogger(tmp_path, name="exp")
    assert second.version == 1 and second.log_dir.endswith("exp/version_1")
    assert TensorBoardLogger(tmp_path, name="exp", version=7).log_dir.endswith("exp/version_7")
    assert TensorBoardLogger(tmp_path, name="exp", version="baseline").log_dir.endswith("exp/baseline")
    assert TensorBoardLogger(tmp_path, name="", version=0).log_dir == str(tmp_path / "version_0")
    assert TensorBoardLogger(tmp_path, name="exp", sub_dir="train").log_dir.endswith("exp/version_1/train")


def test_ignite_log_dir_form_and_alias(tmp_path):
    assert TensorboardLogger is TensorBoardLogger
    tb = TensorboardLogger(log_dir=tmp_path / "tb-logs")
    assert tb.log_dir == str(tmp_path / "tb-logs")
    tb.log_metrics({"x": 2.0}, 3)
    tb.close()
    assert tb_scalars(tmp_path / "tb-logs") == {"x": [(3, 2.0)]}
    with pytest.raises(ValueError, match="not both"):
        TensorBoardLogger(tmp_path, log_dir=tmp_path / "x")


def test_values_reach_the_file_within_flush_secs_without_save(tmp_path):
    tb = TensorBoardLogger(tmp_path, flush_secs=0.05)
    for step in range(1, 101):
        tb.log_metrics({"loss": torch.tensor(float(step))}, step)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = tb_scalars(tb.log_dir).get("loss", []) if os.path.isdir(tb.log_dir) else []
        if len(got) == 100:
            break
        time.sleep(0.05)
    assert got == [(s, float(s)) for s in range(1, 101)]
    tb.finalize("success")


def test_prefix(tmp_path):
    tb = TensorBoardLogger(tmp_path, prefix="train")
    tb.log_metrics({"loss": 1.0}, 1)
    tb.save()
    assert set(tb_scalars(tb.log_dir)) == {"train-loss"}


def test_hyperparameters_go_to_hparams_yaml_and_the_hparams_plugin(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tb = TensorBoardLogger(tmp_path)
    params = {"lr": 0.01, "layers": 3, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "act": torch.nn.ReLU}
    tb.log_hyperparams(params, metrics={"hp_metric": 0.5})
    tb.save()
    saved = yaml.safe_load(open(tb.log_dir + "/hparams.yaml"))
    assert saved["lr"] == 0.01 and saved["opt"] == {"name": "adam", "betas": [0.9, 0.99]}
    assert saved["act"] == str(torch.nn.ReLU)
    acc = EventAccumulator(tb.log_dir)
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(0.01)
    assert start.hparams["layers"].number_value == 3
    assert start.hparams["opt/name"].string_value == "adam"
    assert start.hparams["opt/betas"].string_value == "[0.9, 0.99]"
    assert tb_scalars(tb.log_dir)["hp_metric"] == [(0, 0.5)]


def test_experiment_is_a_summary_writer_and_ignite_forwards_add_methods(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    tb = TensorBoardLogger(tmp_path)
    assert isinstance(tb.experiment, SummaryWriter) and tb.writer is tb.experiment
    tb.add_scalar("direct", 4.0, 2)  # Ignite's TensorboardLogger forwards the writer's methods
    tb.log_metrics({"queued": 5.0}, 2)
    tb.finalize("success")
    assert tb_scalars(tb.log_dir) == {"direct": [(2, 4.0)], "queued": [(2, 5.0)]}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tb.nope  # noqa: B018


def test_resume_continues_the_version_and_purges_later_steps(tmp_path):
    first = TensorBoardLogger(tmp_path, name="run")
    for step in range(1, 6):
        first.log_metrics({"loss": float(step)}, step)
    state = first.state_dict()  # the checkpoint is taken here, at step 5
    for step in range(6, 11):  # the run goes on, then dies
        first.log_metrics({"loss": float(step)}, step)
    first.save()
    assert state == {"name": "run", "version": 0, "step": 5}

    resumed = TensorBoardLogger(tmp_path, name="run")
    resumed.load_state_dict(state)
    assert resumed.log_dir == first.log_dir
    for step in range(6, 9):
        resumed.log_metrics({"loss": 100.0 + step}, step)
    resumed.finalize("success")
    assert tb_scalars(first.log_dir)["loss"] == [(s, float(s)) for s in range(1, 6)] + [
        (s, 100.0 + s) for s in range(6, 9)
    ]


def test_resume_keeps_an_explicit_version_or_another_name(tmp_path):
    state = {"name": "run", "version": 0, "step": 5}
    explicit = TensorBoardLogger(tmp_path, name="run", version=3)
    explicit.load_state_dict(state)
    assert explicit.version == 3
    other = TensorBoardLogger(tmp_path, name="other")
    other.load_state_dict(state)
    assert other.version == 0 and other.log_dir.endswith("other/version_0")


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(logger_base, "_env_rank", 1)
    tb = TensorBoardLogger(tmp_path)
    tb.log_metrics({"x": 1.0}, 1)
    tb.log_hyperparams({"lr": 1})
    tb.experiment.add_scalar("y", 1.0, 1)  # a no-op object off rank zero
    tb.finalize("success")
    assert not any(tmp_path.iterdir())


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r'pip install "ember\[tensorboard\]"'):
        TensorBoardLogger(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "a/b"}, ValueError, "name must be"),
        ({"version": -1}, ValueError, "version must be"),
        ({"version": True}, ValueError, "version must be"),
        ({"flush_secs": 0}, ValueError, "flush interval"),
        ({"log_graph": True}, TypeError, r"unknown arguments \['log_graph'\]"),
        ({"save_dir": 3}, TypeError, "save_dir must be a path"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, error, match):
    kwargs = {"save_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=match):
        TensorBoardLogger(**kwargs)


def test_bad_values_and_steps_are_named(tmp_path):
    tb = TensorBoardLogger(tmp_path)
    with pytest.raises(TypeError, match="'x' must be a number or a scalar tensor"):
        tb.log_metrics({"x": "high"}, 1)
    with pytest.raises(TypeError, match="step must be an int"):
        tb.log_metrics({"x": 1.0}, 1.5)
    with pytest.raises(ValueError, match=r"'v' must be a scalar, got a tensor of shape \(3,\)"):
        tb.log_metrics({"v": torch.ones(3)}, 1)


def test_hyperparameters_logged_before_a_resume_are_written_to_the_resumed_version(tmp_path):
    TensorBoardLogger(tmp_path).log_hyperparams({"lr": 0.5})  # version_0, the run being resumed
    resumed = TensorBoardLogger(tmp_path)  # would be version_1
    resumed.log_hyperparams({"lr": 0.1})
    resumed.load_state_dict({"name": "ember_logs", "version": 0, "step": 3})
    resumed.finalize("success")
    assert yaml.safe_load(open(tmp_path / "ember_logs" / "version_0" / "hparams.yaml")) == {"lr": 0.1}


def test_a_pickled_copy_writes_to_the_same_directory(tmp_path):
    import pickle

    tb = TensorBoardLogger(tmp_path)
    tb.log_metrics({"a": 1.0}, 1)
    copy = pickle.loads(pickle.dumps(tb))
    copy.log_metrics({"b": 2.0}, 2)
    copy.finalize("success")
    tb.finalize("success")
    assert tb_scalars(tb.log_dir) == {"a": [(1, 1.0)], "b": [(2, 2.0)]}
