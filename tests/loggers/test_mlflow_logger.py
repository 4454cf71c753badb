"""MLFlowLogger on its own, read back from a real MLflow SQLite store through MlflowClient."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from logger_readback import mlflow_metrics

from ember.loggers import MLFlowLogger, MLflowLogger
from ember.loggers import base as logger_base


def client_for(logger):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=logger.tracking_uri)


def test_default_store_is_explicit_sqlite_under_save_dir_even_next_to_an_old_mlruns(
    tmp_path, monkeypatch, _mlflow_template
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()  # an old file store must not switch MLflow back to it
    (tmp_path / "mlruns-db").mkdir()
    shutil.copy(_mlflow_template, tmp_path / "mlruns-db" / "mlflow.db")  # tables made already: saves seconds
    logger = MLFlowLogger("exp")
    assert logger.tracking_uri == f"sqlite:///{(tmp_path / 'mlruns-db' / 'mlflow.db').as_posix()}"
    logger.log_metrics({"loss": torch.tensor(0.5)}, 1)
    logger.finalize("success")
    assert (tmp_path / "mlruns-db" / "mlflow.db").is_file()
    assert list((tmp_path / "mlruns").iterdir()) == []
    assert mlflow_metrics(logger) == {"loss": [(1, 0.5)]}
    experiment = client_for(logger).get_experiment_by_name("exp")
    assert experiment.artifact_location == (tmp_path / "mlruns-db" / "artifacts").as_uri()
    assert logger.log_dir == str(tmp_path / "mlruns-db" / logger.name / logger.version)


def test_metrics_are_batched_with_their_steps(mlflow_dir):
    logger = MLFlowLogger("exp", run_name="first", save_dir=mlflow_dir)
    for step in range(1, 1501):  # more than one log_batch call's worth
        logger.log_metrics({"loss": torch.tensor(step / 2), "lr": 0.1}, step)
    logger.save()
    history = mlflow_metrics(logger)
    assert history["loss"] == [(s, s / 2) for s in range(1, 1501)]
    assert history["lr"][-1] == (1500, 0.1)
    run = client_for(logger).get_run(logger.run_id)
    assert run.info.run_name == "first" and run.info.status == "RUNNING"
    logger.finalize("success")


def test_alias_prefix_and_invalid_names(mlflow_dir):
    assert MLflowLogger is MLFlowLogger
    logger = MLflowLogger("exp", save_dir=mlflow_dir, prefix="train")
    with pytest.warns(UserWarning, match="logged as 'train-acc_top_1_'"):
        logger.log_metrics({"acc@top(1)": 1.0, "val/loss": 2.0}, 0)
    logger.finalize("success")
    assert set(mlflow_metrics(logger)) == {"train-acc_top_1_", "train-val/loss"}


def test_hyperparameters_become_params(mlflow_dir):
    logger = MLFlowLogger("exp", save_dir=mlflow_dir)
    logger.log_hyperparams({"lr": 0.01, "model": {"layers": 3, "act": "relu"}, "long": "x" * 7000, "n": None})
    logger.log_params({"seed": 7})  # Ignite's name
    params = client_for(logger).get_run(logger.run_id).data.params
    assert params["lr"] == "0.01" and params["model/layers"] == "3" and params["model/act"] == "relu"
    assert params["long"] == "x" * 6000 and params["n"] == "None" and params["seed"] == "7"
    logger.finalize("success")


@pytest.mark.parametrize(
    ("status", "expected"), [("success", "FINISHED"), ("failed", "FAILED"), ("interrupted", "KILLED")]
)
def test_finalize_sets_the_run_status(mlflow_dir, status, expected):
    logger = MLFlowLogger("exp", save_dir=mlflow_dir, tags={"team": "ember"})
    logger.log_metrics({"x": 1.0}, 0)
    logger.finalize(status)
    run = client_for(logger).get_run(logger.run_id)
    assert run.info.status == expected and run.data.tags["team"] == "ember"
    assert run.info.end_time is not None


def test_bad_status_is_named(mlflow_dir):
    with pytest.raises(ValueError, match="status='done'"):
        MLFlowLogger("exp", save_dir=mlflow_dir).finalize("done")


def test_resume_continues_the_run(mlflow_dir):
    first = MLFlowLogger("exp", save_dir=mlflow_dir)
    first.log_hyperparams({"lr": 0.1})
    for step in range(1, 4):
        first.log_metrics({"loss": float(step)}, step)
    state = first.state_dict()
    first.finalize("interrupted")
    assert state == {"experiment_name": "exp", "run_id": first.run_id, "step": 3}

    resumed = MLFlowLogger("exp", save_dir=mlflow_dir)
    resumed.log_hyperparams({"lr": 0.1})  # made a run of its own before the checkpoint was loaded
    superseded = resumed.run_id
    resumed.load_state_dict(state)
    assert resumed.run_id == first.run_id
    assert client_for(resumed).get_run(first.run_id).info.status == "RUNNING"
    resumed.log_metrics({"loss": 4.0}, 4)
    resumed.finalize("success")
    assert mlflow_metrics(resumed) == {"loss": [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]}
    assert client_for(resumed).get_run(first.run_id).info.status == "FINISHED"
    assert client_for(resumed).get_run(superseded).info.lifecycle_stage == "deleted"


def test_a_given_run_id_is_used_and_kept_on_resume(mlflow_dir):
    first = MLFlowLogger("exp", save_dir=mlflow_dir)
    first.log_metrics({"a": 1.0}, 0)
    first.finalize("success")
    again = MLFlowLogger("exp", save_dir=mlflow_dir, run_id=first.run_id)
    again.load_state_dict({"experiment_name": "exp", "run_id": "someotherrun", "step": 9})
    again.log_metrics({"b": 2.0}, 1)
    again.finalize("success")
    assert mlflow_metrics(again) == {"a": [(0, 1.0)], "b": [(1, 2.0)]}


def test_tracking_uri_from_the_environment(mlflow_dir, monkeypatch):
    uri = f"sqlite:///{(mlflow_dir / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    logger = MLFlowLogger("exp", save_dir=mlflow_dir / "unused")
    assert logger.tracking_uri == uri and logger.save_dir is None and logger.log_dir is None


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(logger_base, "_env_rank", 1)
    logger = MLFlowLogger("exp", save_dir=tmp_path / "db")
    logger.log_metrics({"x": 1.0}, 0)
    logger.log_hyperparams({"lr": 1})
    logger.finalize("success")
    assert not (tmp_path / "db").exists()
    assert not logger.experiment


def test_missing_mlflow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r'pip install "ember\[mlflow\]"'):
        MLFlowLogger("exp", save_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"experiment_name": ""}, ValueError, "experiment_name"),
        ({"run_name": 3}, ValueError, "run_name"),
        ({"tags": ["a"]}, TypeError, "tags must be a dict"),
        ({"save_dir": 1.5}, TypeError, "save_dir must be a path"),
        ({"flush_secs": -1}, ValueError, "flush interval"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, error, match):
    kwargs = {"experiment_name": "exp", "save_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=match):
        MLFlowLogger(**kwargs)


def test_nothing_is_created_until_something_is_logged(tmp_path):
    MLFlowLogger("exp", save_dir=tmp_path / "db")
    assert not (tmp_path / "db").exists()


def test_a_pickled_copy_logs_to_the_same_run(mlflow_dir):
    import pickle

    logger = MLFlowLogger("exp", save_dir=mlflow_dir)
    logger.log_metrics({"a": 1.0}, 1)
    logger.save()
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_metrics({"b": 2.0}, 2)
    copy.finalize("success")
    assert copy.run_id == logger.run_id
    assert mlflow_metrics(logger) == {"a": [(1, 1.0)], "b": [(2, 2.0)]}
