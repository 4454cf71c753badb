"""Ignite-style logging on an Engine with every Ember logger: attach_output_handler,
attach_opt_params_handler, attach, close — values read back from the real files/store. Names are
joined with "/" (TensorBoard, CSV) or with spaces (MLflow), as Ignite's handlers join them; the
side-by-side runs against Ignite are in ``tests/compat/ignite/test_loggers_handlers.py``."""

from __future__ import annotations

import pytest
import torch
from logger_readback import csv_rows, csv_series, mlflow_metrics, tb_scalars

from ember.engine import Engine, Events
from ember.loggers import (
    CSVLogger,
    MLFlowLogger,
    OptimizerParamsHandler,
    OutputHandler,
    TensorBoardLogger,
    global_step_from_engine,
)
from ember.metrics import Accuracy


@pytest.fixture(params=["tensorboard", "mlflow", "csv"])
def make_logger(request, tmp_path, mlflow_dir):
    kind = request.param

    def make():
        if kind == "tensorboard":
            return TensorBoardLogger(log_dir=tmp_path / "tb")
        if kind == "mlflow":
            return MLFlowLogger("engine", save_dir=mlflow_dir)
        return CSVLogger(tmp_path, name="csv")

    def read(logger) -> dict[str, list[tuple[int, float]]]:
        if kind == "tensorboard":
            return tb_scalars(logger.log_dir)
        if kind == "mlflow":
            return mlflow_metrics(logger)
        rows = csv_rows(logger.metrics_file)
        return {k: csv_series(rows, k) for k in rows[0] if k != "step" and csv_series(rows, k)}

    def name(*parts: str) -> str:  # Ignite's MLflow handlers join the parts with spaces
        return (" " if kind == "mlflow" else "/").join(parts)

    make.read = read
    make.name = name
    return make


def losses_engine() -> tuple[Engine, list[float]]:
    losses = [0.5, 0.25, 0.125, 2.0, 1.0, 3.0]
    return Engine(lambda engine, batch: torch.tensor(losses[engine.state.iteration - 1])), losses


def test_output_handler_logs_the_output_at_each_iteration(make_logger):
    engine, losses = losses_engine()
    logger = make_logger()
    logger.attach_output_handler(
        engine, Events.ITERATION_COMPLETED, tag="training", output_transform=lambda loss: {"loss": loss}
    )
    engine.run(range(3), max_epochs=2)
    logger.close()
    assert make_logger.read(logger) == {
        make_logger.name("training", "loss"): [(i + 1, v) for i, v in enumerate(losses)]
    }


def test_a_filtered_event_and_a_bare_number_output(make_logger):
    engine, _ = losses_engine()
    logger = make_logger()
    logger.attach_output_handler(
        engine, Events.ITERATION_COMPLETED(every=2), tag="t", output_transform=lambda loss: loss
    )
    engine.run(range(6), max_epochs=1)
    logger.close()
    assert make_logger.read(logger) == {make_logger.name("t", "output"): [(2, 0.25), (4, 2.0), (6, 3.0)]}


def test_evaluator_metrics_at_the_trainers_epoch(make_logger):
    y = torch.tensor([0, 1, 2, 1])
    logits = [torch.eye(3)[[0, 1, 2, 2]], torch.eye(3)[[0, 1, 2, 1]]]  # 3/4 right, then 4/4
    trainer = Engine(lambda engine, batch: None)
    evaluator = Engine(lambda engine, batch: (logits[trainer.state.epoch - 1], y))
    Accuracy().attach(evaluator, "accuracy")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run([0], max_epochs=1))
    logger = make_logger()
    logger.attach_output_handler(
        evaluator, Events.EPOCH_COMPLETED, tag="validation", metric_names=["accuracy"],
        global_step_transform=global_step_from_engine(trainer),
    )  # fmt: skip
    trainer.run(range(5), max_epochs=2)
    logger.close()
    assert make_logger.read(logger) == {make_logger.name("validation", "accuracy"): [(1, 0.75), (2, 1.0)]}


def test_opt_params_handler_logs_each_group(make_logger):
    w = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    engine = Engine(lambda engine, batch: sched.step())
    logger = make_logger()
    logger.attach_opt_params_handler(engine, Events.ITERATION_STARTED, optimizer=opt)
    engine.run(range(3), max_epochs=1)
    logger.close()
    assert make_logger.read(logger) == {
        make_logger.name("lr", "group_0"): [(1, 1.0), (2, 0.5), (3, 0.25)],
        make_logger.name("lr", "group_1"): [(1, 0.5), (2, 0.25), (3, 0.125)],
    }


def test_handlers_run_after_metrics_and_user_handlers(tmp_path):
    engine, _ = losses_engine()
    logger = CSVLogger(tmp_path)
    logger.attach_output_handler(
        engine, Events.EPOCH_COMPLETED, tag="t", metric_names="all", state_attributes=["epoch"]
    )

    @engine.on(Events.EPOCH_COMPLETED)  # attached after the logger, runs before it
    def add_metric(engine):
        engine.state.metrics["late"] = 10.0 * engine.state.epoch

    engine.run(range(2), max_epochs=2)
    logger.close()
    rows = csv_rows(logger.metrics_file)
    assert csv_series(rows, "t/late") == [(1, 10.0), (2, 20.0)]
    assert csv_series(rows, "t/epoch") == [(1, 1.0), (2, 2.0)]


def test_nested_dicts_vectors_and_events_lists(tmp_path):
    engine = Engine(
        lambda engine, batch: {"loss": torch.tensor(1.0), "parts": {"a": 2.0, "b": torch.tensor([3.0, 4.0])}}
    )
    logger = CSVLogger(tmp_path)
    handle = logger.attach_output_handler(
        engine, Events.ITERATION_COMPLETED | Events.COMPLETED, tag="x", output_transform=lambda o: o
    )
    engine.run(range(1), max_epochs=1)
    rows = csv_rows((logger.save(), logger.metrics_file)[1])
    assert csv_series(rows, "x/parts/b/1") == [
        (1, 4.0),
        (1, 4.0),
    ]  # ITERATION_COMPLETED at iteration 1, COMPLETED at epoch 1
    assert csv_series(rows, "x/parts/a") == [(1, 2.0), (1, 2.0)]
    handle.remove()
    engine.run(range(1), max_epochs=1)
    logger.save()
    assert len(csv_rows(logger.metrics_file)) == 2


def test_custom_handler_with_attach(tmp_path):
    engine, _ = losses_engine()
    logger = CSVLogger(tmp_path)
    handler = OutputHandler("custom", output_transform=lambda loss: {"double": loss * 2})
    logger.attach(engine, handler, Events.EPOCH_COMPLETED)
    engine.run(range(3), max_epochs=1)
    logger.close()
    assert csv_series(csv_rows(logger.metrics_file), "custom/double") == [(1, 0.25)]  # iteration 3's output


def test_a_missing_metric_warns(tmp_path):
    engine, _ = losses_engine()
    logger = CSVLogger(tmp_path)
    logger.attach_output_handler(engine, Events.EPOCH_COMPLETED, tag="v", metric_names=["nope"])
    with pytest.warns(UserWarning, match="metric 'nope' is not in engine.state.metrics"):
        engine.run(range(1), max_epochs=1)


def test_bad_handler_arguments_are_named():
    with pytest.raises(ValueError, match="needs metric_names, output_transform or state_attributes"):
        OutputHandler("t")
    with pytest.raises(TypeError, match="metric_names must be a list"):
        OutputHandler("t", metric_names="accuracy")
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        OptimizerParamsHandler(object())
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="param_name='betas' is not in parameter groups"):
        OptimizerParamsHandler(opt, "betas")


def test_global_step_transform_must_return_an_int(tmp_path):
    engine, _ = losses_engine()
    logger = CSVLogger(tmp_path)
    logger.attach_output_handler(
        engine, Events.EPOCH_COMPLETED, tag="t", output_transform=lambda o: o, global_step_transform=lambda e, n: "1"
    )
    with pytest.raises(TypeError, match="global_step_transform must return an int"):
        engine.run(range(1), max_epochs=1)


def test_logger_as_context_manager_closes_the_run(mlflow_dir):
    engine, _ = losses_engine()
    with MLFlowLogger("ctx", save_dir=mlflow_dir) as logger:
        logger.attach_output_handler(engine, Events.ITERATION_COMPLETED, tag="t", output_transform=lambda o: o)
        engine.run(range(2), max_epochs=1)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(logger.tracking_uri).get_run(logger.run_id).info.status == "FINISHED"


def test_weights_and_grads_handlers(tmp_path):
    from ember.loggers.tensorboard_logger import (
        GradsHistHandler,
        GradsScalarHandler,
        WeightsHistHandler,
        WeightsScalarHandler,
    )

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    engine = Engine(lambda e, b: model(torch.ones(1, 2)).sum().backward())
    csv = CSVLogger(tmp_path, name="csv")  # scalars go to any logger
    csv.attach(engine, WeightsScalarHandler(model, reduction=torch.sum, whitelist=["1."]), Events.ITERATION_COMPLETED)
    csv.attach(engine, GradsScalarHandler(model, tag="t", whitelist=lambda n, p: n == "0.bias"), Events.COMPLETED)
    engine.run(range(2), max_epochs=1)
    csv.close()
    rows = csv_rows(csv.metrics_file)
    assert csv_series(rows, "weights_sum/1/weight") == [(1, 2.0), (2, 2.0)]
    assert csv_series(rows, "t/grads_norm/0/bias") == [(1, pytest.approx(2.0 * 2**0.5))]  # 2 backward passes
    with pytest.raises(RuntimeError, match="needs a TensorBoard logger"):
        WeightsHistHandler(model)(engine, csv, Events.COMPLETED)
    tb = TensorBoardLogger(log_dir=tmp_path / "tb")
    GradsHistHandler(model)(engine, tb, Events.EPOCH_COMPLETED)
    tb.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0})
    acc.Reload()
    assert sorted(acc.Tags()["histograms"]) == ["grads/0/bias", "grads/0/weight", "grads/1/bias", "grads/1/weight"]
    with pytest.raises(TypeError, match="reduction must return a number or a 0-d tensor"):
        WeightsScalarHandler(model, reduction=lambda t: t * 2)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        GradsScalarHandler(object())
