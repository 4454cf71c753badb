"""``MLFlowLogger``: metrics, hyperparameters and run status to an MLflow tracking store.

Without ``tracking_uri`` (and without ``MLFLOW_TRACKING_URI`` in the environment) runs go to an
SQLite store at ``<save_dir>/mlflow.db``, always passed to MLflow explicitly: MLflow 3 refuses its
old file store (``./mlruns``), and an explicit URI keeps a leftover ``./mlruns`` folder from ever
switching it back. View the runs with ``mlflow ui --backend-store-uri sqlite:///mlruns-db/mlflow.db``.

Metrics are queued with their step (tensors stay on the device) and sent with ``log_batch`` every
``flush_secs`` from a background thread; ``save()`` sends at once. Used at the Engine level like
Ignite's ``MLflowLogger`` (the same class)::

    mlflow_logger = MLflowLogger(experiment_name="mnist")
    mlflow_logger.attach_output_handler(trainer, Events.ITERATION_COMPLETED, tag="training",
                                        output_transform=lambda loss: {"loss": loss})

(logged as ``training loss``: at the Engine level, names are joined with spaces as Ignite's MLflow
handlers join them; the Trainer's ``self.log`` names are kept as they are). Characters MLflow does
not allow in names become ``_``, with a warning. This module also has Ignite's
``ignite.handlers.mlflow_logger`` names: ``OutputHandler``, ``OptimizerParamsHandler``,
``global_step_from_engine``.
"""

from __future__ import annotations

import os
import re
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ember.loggers.base import (
    DummyExperiment,
    Logger,
    check_params,
    check_path,
    check_step,
    flatten_params,
    is_rank_zero,
    plain_param,
)
from ember.loggers.buffer import Entry, MetricBuffer
from ember.loggers.handlers import OptimizerParamsHandler, OutputHandler, global_step_from_engine
from ember.optional import require

_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_MLFLOW_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_BAD_CHARS = re.compile(r"[^/\w.\- :]")
_PARAM_MAX = 6000  # MLflow's limit on a parameter value's length
_METRICS_PER_BATCH = 250
_PARAMS_PER_BATCH = 100


class MLFlowLogger(Logger):
    """Log to MLflow: one run per logger, in experiment ``experiment_name`` (created if missing).

    Args:
        experiment_name: the MLflow experiment.
        run_name: the run's display name (MLflow picks one when None).
        tracking_uri: a tracking server or database URI; None: ``$MLFLOW_TRACKING_URI`` if set,
            else ``sqlite:///<save_dir>/mlflow.db``.
        save_dir: where the default SQLite store (and its artifacts) live.
        tags: tags set on the new run.
        prefix: prepended to every metric name as ``"<prefix>-<name>"``.
        artifact_location: artifact root of a newly created experiment (default with the SQLite
            store: ``<save_dir>/artifacts``).
        run_id: log into this existing run instead of creating one.
        flush_secs: how often queued metrics are sent.
    """

    accepts_tensors = True
    #: Engine-level handlers join name parts with spaces, as Ignite's MLflow handlers ("training loss")
    engine_name_separator = " "

    def __init__(
        self,
        experiment_name: str = "ember_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        save_dir: str | os.PathLike = "./mlruns-db",
        *,
        tags: dict[str, Any] | None = None,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        flush_secs: float = 1.0,
    ) -> None:
        require("mlflow", "mlflow", "MLFlowLogger")
        if not isinstance(experiment_name, str) or not experiment_name:
            raise ValueError(f"experiment_name must be a non-empty string, got {experiment_name!r}")
        for arg, value in (
            ("run_name", run_name),
            ("tracking_uri", tracking_uri),
            ("artifact_location", artifact_location),
            ("run_id", run_id),
        ):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{arg} must be a non-empty string or None, got {value!r}")
        if tags is not None and not isinstance(tags, Mapping):
            raise TypeError(f"tags must be a dict or None, got {type(tags).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {prefix!r}")
        self._save_dir = check_path("save_dir", save_dir).absolute()
        self._default_store = tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri is None:
            tracking_uri = (
                os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self._save_dir / 'mlflow.db').as_posix()}"
            )
        self._tracking_uri = tracking_uri
        if artifact_location is None and self._default_store:
            artifact_location = (self._save_dir / "artifacts").as_uri()
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._run_id = run_id
        self._run_id_given = run_id is not None
        self._experiment_id: str | None = None
        self._client: Any = None
        self._init_lock = threading.RLock()  # the run is made once, from whichever thread needs it first
        self._last_step: int | None = None
        self._buffer_secs = flush_secs
        self._buffer = self._new_buffer()

    def _new_buffer(self) -> MetricBuffer:
        return MetricBuffer(
            self._write_entries, self._buffer_secs, name="MLFlowLogger", enabled=is_rank_zero, rename=self._metric_name
        )

    def __getstate__(self) -> dict[str, Any]:
        # the client, the writer thread and the locks stay with the original
        state = dict(self.__dict__)
        state.update(_buffer=None, _client=None, _init_lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_lock = threading.RLock()
        self._buffer = self._new_buffer()

    # ------------------------------------------------------------------ the run

    @property
    def tracking_uri(self) -> str:
        """Where the MLflow store is (``sqlite:///...``, ``file:...``, ``http://...``)."""
        return self._tracking_uri

    @property
    def experiment(self) -> Any:
        """The ``mlflow.tracking.MlflowClient`` (the run is created on first use); a no-op object
        off rank zero."""
        if not is_rank_zero():
            return DummyExperiment()
        if self._client is None or self._run_id is None:
            with self._init_lock:
                if self._client is None:
                    from mlflow.tracking import MlflowClient

                    if self._default_store:
                        self._save_dir.mkdir(parents=True, exist_ok=True)
                    self._client = MlflowClient(tracking_uri=self._tracking_uri)
                if self._run_id is None:
                    self._create_run(self._client)
        return self._client

    def _create_run(self, client: Any) -> None:
        exp = client.get_experiment_by_name(self._experiment_name)
        if exp is None:
            self._experiment_id = client.create_experiment(
                self._experiment_name, artifact_location=self._artifact_location
            )
        else:
            self._experiment_id = exp.experiment_id
        run = client.create_run(self._experiment_id, tags=self._tags or None, run_name=self._run_name)
        self._run_id = run.info.run_id

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id (the run is created on first use); None off rank zero."""
        if is_rank_zero():
            self.experiment  # noqa: B018 (creates the run)
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment's id (asked of the store once, on rank zero; None elsewhere)."""
        if self._experiment_id is None and is_rank_zero():
            client = self.experiment
            self._experiment_id = client.get_run(self._run_id).info.experiment_id
        return self._experiment_id

    @property
    def name(self) -> str:
        """The experiment id (Lightning's convention)."""
        return self.experiment_id or ""

    @property
    def version(self) -> str:
        """The run id (Lightning's convention)."""
        return self.run_id or ""

    @property
    def save_dir(self) -> str | None:
        """The local directory of the default SQLite store; None for other tracking URIs."""
        return str(self._save_dir) if self._default_store else None

    @property
    def log_dir(self) -> str | None:
        """``<save_dir>/<experiment_id>/<run_id>`` with the default store (checkpoints go there)."""
        if not self._default_store:
            return None
        return str(Path(self._save_dir) / self.name / self.version)

    # ------------------------------------------------------------------ writing

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Queue metrics (numbers or 0-d tensors) for ``step``; sent within ``flush_secs``
        (by rank zero only: other ranks drop them then)."""
        if type(step) is not int:
            step = check_step(step)
        self._last_step = step
        self._buffer.add(step, metrics)

    def _metric_name(self, key: str) -> str:
        name = f"{self._prefix}-{key}" if self._prefix else key
        clean = _BAD_CHARS.sub("_", name)
        if clean != name:
            warnings.warn(
                f"MLFlowLogger: metric {name!r} is logged as {clean!r} (MLflow allows letters, digits and _-. :/)",
                stacklevel=3,
            )
        return clean

    def _write_entries(self, entries: list[Entry]) -> None:
        from mlflow.entities import Metric

        client = self.experiment
        flat = [(k, v, int(t * 1000), s) for s, t, keys, values in entries for k, v in zip(keys, values)]
        for i in range(0, len(flat), _METRICS_PER_BATCH):  # small batches: few objects alive at once for the GC
            client.log_batch(self._run_id, metrics=[Metric(*m) for m in flat[i : i + _METRICS_PER_BATCH]])

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` as MLflow parameters: nested keys as ``"a/b"``, values as text (cut to
        MLflow's 6000 characters). MLflow does not allow changing a logged parameter's value."""
        if not is_rank_zero():
            return
        from mlflow.entities import Param

        flat = flatten_params(check_params(params))
        entries = [Param(_BAD_CHARS.sub("_", k), str(plain_param(v))[:_PARAM_MAX]) for k, v in flat.items()]
        client = self.experiment
        with self._buffer.lock:
            for i in range(0, len(entries), _PARAMS_PER_BATCH):
                client.log_batch(self._run_id, params=entries[i : i + _PARAMS_PER_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Ignite's name for :meth:`log_hyperparams`."""
        self.log_hyperparams(params)

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file to the run's artifacts."""
        if is_rank_zero():
            self.experiment.log_artifact(self._run_id, os.fspath(local_path), artifact_path)

    def save(self) -> None:
        """Send everything queued now."""
        self._buffer.flush()

    def finalize(self, status: str) -> None:
        """Send everything and end the run: "success" -> FINISHED, "failed" -> FAILED,
        "interrupted" -> KILLED (MLflow's own status names are accepted too)."""
        mlflow_status = _STATUS.get(status, status)
        if mlflow_status not in _MLFLOW_STATUSES:
            raise ValueError(f"finalize: status={status!r}; use 'success', 'failed', 'interrupted' or an MLflow status")
        self._buffer.close()
        if self._client is not None and self._run_id is not None and is_rank_zero():
            self._client.set_terminated(self._run_id, mlflow_status, end_time=int(time.time() * 1000))

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """``experiment_name``, ``run_id`` and the last ``step`` logged: plain values."""
        return {"experiment_name": self._experiment_name, "run_id": self._run_id, "step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved run (unless this logger was given its own ``run_id`` or another
        experiment): later metrics go to it and its status is RUNNING again. MLflow keeps every
        logged value, so steps logged after the checkpoint by the interrupted run stay in its history."""
        saved = state.get("run_id")
        if self._run_id_given or saved is None or state.get("experiment_name") != self._experiment_name:
            return
        if state.get("step") is not None:
            self._last_step = int(state["step"])
        if saved == self._run_id or not is_rank_zero():
            self._run_id = saved
            return
        self._buffer.flush()
        client = self._client
        if client is not None and self._run_id is not None:  # a run made before the resume: superseded
            client.delete_run(self._run_id)
        self._run_id = saved
        client = self.experiment
        client.update_run(saved, status="RUNNING")
        self._experiment_id = client.get_run(saved).info.experiment_id


MLflowLogger = MLFlowLogger

__all__ = ["MLFlowLogger", "MLflowLogger", "OptimizerParamsHandler", "OutputHandler", "global_step_from_engine"]
