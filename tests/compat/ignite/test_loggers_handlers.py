"""Differential tests: Ignite 0.5.5's TensorBoard and MLflow logging handlers against Ember's, the same
training run logged by both, read back from the files / store: scalar names, steps and values,
histograms, and ``global_step_from_engine`` everywhere Ignite has it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard")
ignite_engine = pytest.importorskip("ignite.engine")
ignite_handlers = pytest.importorskip("ignite.handlers")
ignite_tb = pytest.importorskip("ignite.handlers.tensorboard_logger")

import ember.engine as ember_engine  # noqa: E402
import ember.handlers as ember_handlers  # noqa: E402
import ember.loggers.mlflow_logger as ember_mlflow  # noqa: E402
import ember.loggers.tensorboard_logger as ember_tb  # noqa: E402

TB = {"ignite": (ignite_engine, ignite_tb), "ember": (ember_engine, ember_tb)}
TB_NAMES = [
    "TensorboardLogger",
    "OutputHandler",
    "OptimizerParamsHandler",
    "WeightsScalarHandler",
    "WeightsHistHandler",
    "GradsScalarHandler",
    "GradsHistHandler",
    "global_step_from_engine",
]


def read_tensorboard(log_dir: Path) -> tuple[dict[str, list], dict[str, list]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    hists = {
        t: [(e.step, e.histogram_value.num, e.histogram_value.min, e.histogram_value.max) for e in acc.Histograms(t)]
        for t in tags["histograms"]
    }
    return scalars, hists


def training_run(engine_mod: Any, attach: Any, epochs: int = 2) -> None:
    """A tiny training loop (fixed seed) with a trainer, an evaluator each epoch, and ``attach`` adding
    the logging handlers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.05}], lr=0.1)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 3, generator=g), torch.randint(2, (5,), generator=g)) for _ in range(4)]

    def step(engine: Any, batch: Any) -> dict[str, Any]:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "parts": {"a": 2.0 * loss.item(), "vec": torch.tensor([1.0, loss.item()])}}

    trainer = engine_mod.Engine(step)
    evaluator = engine_mod.Engine(lambda e, b: None)

    @evaluator.on(engine_mod.Events.COMPLETED)
    def put_metrics(e: Any) -> None:
        e.state.metrics.update({"acc": 0.25 * trainer.state.epoch, "nll": 1.0 / trainer.state.epoch})

    trainer.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, lambda: evaluator.run([0, 1], max_epochs=1))
    attach(trainer, evaluator, model, opt)
    trainer.run(batches, max_epochs=epochs)


def test_ignite_tensorboard_module_names_exist_in_ember() -> None:
    for name in TB_NAMES:
        assert hasattr(ember_tb, name), name
    for name in ("MLflowLogger", "OutputHandler", "OptimizerParamsHandler", "global_step_from_engine"):
        assert hasattr(ember_mlflow, name), name
    for name in ("global_step_from_engine", "TensorboardLogger", "MLflowLogger", "Checkpoint", "DiskSaver"):
        assert hasattr(ember_handlers, name), name


def tensorboard_handlers(engine_mod: Any, tb: Any, logger: Any) -> Any:
    """What the test attaches, with one library's names: every Ignite TensorBoard handler."""

    def attach(trainer: Any, evaluator: Any, model: nn.Module, opt: Any) -> None:
        E = engine_mod.Events
        logger.attach_output_handler(
            trainer, E.ITERATION_COMPLETED, tag="training", output_transform=lambda o: o, state_attributes=["epoch"]
        )
        logger.attach_output_handler(
            evaluator, E.COMPLETED, tag="validation", metric_names=["acc", "nll"],
            global_step_transform=tb.global_step_from_engine(trainer),
        )  # fmt: skip
        logger.attach_opt_params_handler(trainer, E.ITERATION_STARTED, opt, tag="opt")
        logger.attach(trainer, tb.OptimizerParamsHandler(opt, "momentum"), E.EPOCH_COMPLETED)
        logger.attach(trainer, tb.WeightsScalarHandler(model), E.ITERATION_COMPLETED(every=2))
        grads = tb.GradsScalarHandler(model, reduction=torch.max, tag="g", whitelist=["2."])
        logger.attach(trainer, grads, E.ITERATION_COMPLETED)
        weights = tb.WeightsHistHandler(model, whitelist=lambda n, p: n.endswith("weight"))
        logger.attach(trainer, weights, E.EPOCH_COMPLETED)
        logger.attach(trainer, tb.GradsHistHandler(model, tag="h"), E.EPOCH_COMPLETED)

    return attach


def test_tensorboard_scalars_and_histograms_match_ignite(tmp_path: Path) -> None:
    read = {}
    for lib, (engine_mod, tb) in TB.items():
        logger = tb.TensorboardLogger(log_dir=tmp_path / lib)
        training_run(engine_mod, tensorboard_handlers(engine_mod, tb, logger))
        logger.close()
        read[lib] = read_tensorboard(tmp_path / lib)
    (our_scalars, our_hists), (their_scalars, their_hists) = read["ember"], read["ignite"]
    assert sorted(our_scalars) == sorted(their_scalars)
    for tag, series in their_scalars.items():
        assert [s for s, _ in our_scalars[tag]] == [s for s, _ in series], tag
        assert [v for _, v in our_scalars[tag]] == pytest.approx([v for _, v in series], rel=1e-6), tag
    assert our_hists == their_hists
    assert "training/parts/vec/1" in our_scalars and "g/grads_max/2/bias" in our_scalars
    assert sorted(our_hists) == ["h/grads/0/bias", "h/grads/0/weight", "h/grads/2/bias", "h/grads/2/weight",
                                 "weights/0/weight", "weights/2/weight"]  # fmt: skip


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh SQLite store; Ignite's MLflowLogger sets MLflow's global tracking URI, unset afterwards."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(None)


def mlflow_handlers(engine_mod: Any, logger: Any, opt_handler: Any, step_from: Any) -> Any:
    def attach(trainer: Any, evaluator: Any, model: nn.Module, opt: Any) -> None:
        E = engine_mod.Events
        logger.attach_output_handler(trainer, E.ITERATION_COMPLETED, tag="training", output_transform=lambda o: o)
        logger.attach_output_handler(
            evaluator, E.COMPLETED, tag="validation", metric_names="all", global_step_transform=step_from(trainer)
        )
        logger.attach_opt_params_handler(trainer, E.ITERATION_STARTED, opt)
        logger.attach(trainer, opt_handler(opt, "lr", tag="opt"), E.EPOCH_COMPLETED)

    return attach


def test_mlflow_metric_names_and_values_match_ignite(mlflow_uri: str, tmp_path: Path) -> None:
    """Ignite's MLflow handlers join name parts with spaces ("training loss", "lr group_0"); so do
    Ember's at the Engine level."""
    from ignite.handlers.mlflow_logger import MLflowLogger as IgniteMLflowLogger
    from ignite.handlers.mlflow_logger import OptimizerParamsHandler as IgniteOptimizerParamsHandler
    from mlflow.tracking import MlflowClient

    run_ids = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ignite_logger = IgniteMLflowLogger(tracking_uri=mlflow_uri)
        run_ids["ignite"] = ignite_logger.active_run.info.run_id
        attach = mlflow_handlers(
            ignite_engine, ignite_logger, IgniteOptimizerParamsHandler, ignite_handlers.global_step_from_engine
        )
        training_run(ignite_engine, attach)
        ignite_logger.close()
        ember_logger = ember_mlflow.MLflowLogger("ember", tracking_uri=mlflow_uri, save_dir=tmp_path / "unused")
        attach = mlflow_handlers(
            ember_engine, ember_logger, ember_mlflow.OptimizerParamsHandler, ember_mlflow.global_step_from_engine
        )
        training_run(ember_engine, attach)
        ember_logger.close()
        run_ids["ember"] = ember_logger.run_id
    client = MlflowClient(tracking_uri=mlflow_uri)
    series = {}
    for lib, run_id in run_ids.items():
        keys = client.get_run(run_id).data.metrics
        series[lib] = {
            k: sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(run_id, k)) for k in keys
        }
    assert series["ember"] == series["ignite"]
    assert {"training loss", "training parts a", "training parts vec 1", "validation acc", "lr group_1",
            "opt lr group_0"} <= set(series["ember"])  # fmt: skip


@pytest.mark.parametrize("fallback_attr", ["epoch", "iteration"])
def test_global_step_from_engine_matches_ignite(fallback_attr: str) -> None:
    results = {}
    for lib, engine_mod, handlers_mod in (
        ("ignite", ignite_engine, ignite_handlers),
        ("ember", ember_engine, ember_handlers),
    ):
        trainer = engine_mod.Engine(lambda e, b: None)
        trainer.run(range(3), max_epochs=2)
        E = engine_mod.Events
        plain = handlers_mod.global_step_from_engine(trainer, fallback_attr=fallback_attr)
        fixed = handlers_mod.global_step_from_engine(trainer, custom_event_name=E.ITERATION_COMPLETED)
        events = [E.STARTED, E.EPOCH_STARTED, E.ITERATION_STARTED, E.ITERATION_COMPLETED(every=2), E.EPOCH_COMPLETED,
                  E.COMPLETED, E.GET_BATCH_STARTED, E.TERMINATE, E.EXCEPTION_RAISED]  # fmt: skip
        results[lib] = [(plain(None, ev), fixed(None, ev)) for ev in events]
    assert results["ember"] == results["ignite"]
