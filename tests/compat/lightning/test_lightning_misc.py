"""Smaller parity items, Lightning against Ember: schedulers under manual optimization, schedulers
bound to a foreign optimizer, unknown scheduler-dict keys, hooks and entry points called with
Lightning's parameter names, TensorBoard files closed after every stage, EarlyStopping's stopping
reason, and the profilers (which actions a report names, where it is written)."""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module
from torch.nn import functional as F

import ember
import ember.callbacks
import ember.loggers
import ember.profilers

MISCONFIGURED = (pl.utilities.exceptions.MisconfigurationException, ValueError, TypeError, RuntimeError)


def fit_errors(fw: Framework, tmp_path: Path, module: Any, **kwargs: Any) -> BaseException | None:
    options = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer = fw.trainer(tmp_path / fw.name, **{**options, **kwargs})
    try:
        quiet_fit(trainer, module, data(32), data(16))
    except MISCONFIGURED as err:
        return err
    return None


# ---------------------------------------------------------------------- schedulers


def plateau_module(fw: Framework, manual: bool, as_dict: bool) -> Any:
    base = regression_module(fw)

    class Plateau(base):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = not manual
            self.lrs: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if not manual:
                return super().training_step(batch, batch_idx)
            opt = self.optimizers()
            loss = super().training_step(batch, batch_idx)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            return loss

        def on_train_epoch_end(self) -> None:
            if manual:  # the user steps the scheduler, with the metric of their choice
                self.lr_schedulers().step(1.0)
            self.lrs.append(self.optimizers().param_groups[0]["lr"])

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched} if as_dict else sched}

    return Plateau()


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "bare"])
def test_reduce_lr_on_plateau_without_monitor_runs_under_manual_optimization(tmp_path: Path, as_dict: bool) -> None:
    lrs = {}
    for fw in BOTH:
        module = plateau_module(fw, manual=True, as_dict=as_dict)
        assert fit_errors(fw, tmp_path, module, max_epochs=3) is None
        lrs[fw.name] = module.lrs
    assert lrs["ember"] == lrs["lightning"] == [0.1, 0.05, 0.025]


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "bare"])
def test_reduce_lr_on_plateau_without_monitor_is_an_error_under_automatic_optimization(
    tmp_path: Path, as_dict: bool
) -> None:
    errors = {fw.name: fit_errors(fw, tmp_path, plateau_module(fw, manual=False, as_dict=as_dict)) for fw in BOTH}
    for err in errors.values():
        assert err is not None and "monitor" in str(err) and "ReduceLROnPlateau" in str(err)


def test_manual_optimization_warns_about_scheduler_keys_it_ignores(tmp_path: Path) -> None:
    def module(fw: Framework) -> Any:
        m = plateau_module(fw, manual=True, as_dict=True)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        m.configure_optimizers = lambda: {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "x"}}
        return m

    for fw in BOTH:
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_train_batches=1)
        with pytest.warns(RuntimeWarning, match=r"monitor.*ignored"):
            trainer.fit(module(fw), data(16))


def foreign_scheduler_module(fw: Framework) -> Any:
    class Foreign(regression_module(fw)):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            other = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(other, step_size=1)]

    return Foreign()


def test_a_scheduler_of_an_optimizer_that_was_not_returned_is_an_error(tmp_path: Path) -> None:
    for fw in BOTH:
        err = fit_errors(fw, tmp_path, foreign_scheduler_module(fw))
        assert err is not None, fw.name
        assert "optimizer that wasn't returned from `configure_optimizers`" in str(err), (fw.name, err)


def test_unknown_scheduler_dict_keys_warn_and_training_goes_on(tmp_path: Path) -> None:
    def module(fw: Framework) -> Any:
        class Bogus(regression_module(fw)):
            def configure_optimizers(self) -> Any:
                opt = torch.optim.SGD(self.parameters(), lr=0.1)
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "bogus": 1}}

        return Bogus()

    lrs = {}
    for fw in BOTH:
        m = module(fw)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_train_batches=3)
        with pytest.warns(RuntimeWarning, match=r"unsupported keys in the lr scheduler dict.*bogus"):
            trainer.fit(m, data(32))
        lrs[fw.name] = m.optimizers().param_groups[0]["lr"]
    assert lrs["ember"] == lrs["lightning"] == 0.1 * 0.5**3


def test_unknown_optimizer_dict_keys_warn(tmp_path: Path) -> None:
    for fw in BOTH:

        class Extra(regression_module(fw)):
            def configure_optimizers(self) -> Any:
                return {"optimizer": torch.optim.SGD(self.parameters(), lr=0.1), "extra": 1}

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_train_batches=1)
        with pytest.warns(RuntimeWarning, match=r"unsupported keys in the optimizer configuration.*extra"):
            trainer.fit(Extra(), data(16))


# ---------------------------------------------------------------------- Lightning's parameter names


def keyword_hooks(fw: Framework, log: list) -> tuple[Any, Any]:
    """A module and a callback whose hooks use Lightning's parameter names, recording what they got."""

    class Named(regression_module(fw)):
        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return self(batch[0])

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            log.append(("module", "on_train_batch_end", sorted(outputs), batch_idx))

        def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            log.append(("module", "on_validation_batch_end", batch_idx, dataloader_idx))

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            log.append(("module", "on_before_optimizer_step", type(optimizer).__name__))

    class NamedCallback(fw.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            log.append(("callback", "on_train_batch_end", type(pl_module).__name__, sorted(outputs), batch_idx))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            log.append(("callback", "on_train_epoch_end", trainer.current_epoch))

        def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            log.append(("callback", "on_test_batch_start", batch_idx, dataloader_idx))

        def on_predict_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
        ) -> None:
            log.append(("callback", "on_predict_batch_end", tuple(outputs.shape), batch_idx))

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            log.append(("callback", "on_exception", type(exception).__name__))

    return Named(), NamedCallback()


def test_hooks_with_lightnings_parameter_names_and_keyword_entry_points(tmp_path: Path) -> None:
    logs, results = {}, {}
    for fw in BOTH:
        log: list = []
        module, callback = keyword_hooks(fw, log)
        torch.manual_seed(0)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_train_batches=2, callbacks=[callback],
                             num_sanity_val_steps=0, enable_checkpointing=True)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model=module, train_dataloaders=data(32), val_dataloaders=data(16))
            val = trainer.validate(model=module, dataloaders=data(16), ckpt_path="last", verbose=False)
            test = trainer.test(model=module, dataloaders=data(16), ckpt_path=None, verbose=False)
            preds = trainer.predict(model=module, dataloaders=data(16), return_predictions=True)
            none = trainer.predict(model=module, dataloaders=data(16), return_predictions=False)
        logs[fw.name] = log
        results[fw.name] = (sorted(val[0]), sorted(test[0]), [tuple(p.shape) for p in preds], none)
    assert logs["ember"] == logs["lightning"]
    assert results["ember"] == results["lightning"]


@pytest.mark.parametrize("entry", ["fit", "validate", "test", "predict"])
def test_entry_points_take_lightnings_parameters_in_lightnings_order(entry: str) -> None:
    def parameters(cls: type) -> list[str]:
        return [p for p in inspect.signature(getattr(cls, entry)).parameters if p != "weights_only"]

    assert parameters(ember.Trainer) == parameters(pl.Trainer)


# ---------------------------------------------------------------------- TensorBoard files closed


def open_event_files(root: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)) and "tfevents" in target:
            out.append(target)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("stage", ["test", "validate", "predict"])
def test_tensorboard_files_and_threads_are_closed_after_each_stage(tmp_path: Path, stage: str) -> None:
    pytest.importorskip("tensorboard")
    threads_before = set(threading.enumerate())

    class Model(regression_module(EMBER)):
        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            return self(batch[0])

        def test_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("test_loss", F.mse_loss(self(batch[0]), batch[1]))
            self.logger.experiment.add_scalar("raw", 1.0, batch_idx)  # opens the SummaryWriter as well

    logger = ember.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    trainer = EMBER.trainer(tmp_path, logger=logger)
    model = Model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if stage == "predict":
            logger.experiment.add_scalar("raw", 1.0, 0)
            trainer.predict(model, data(16))
        else:
            getattr(trainer, stage)(model, data(16), verbose=False)
    assert open_event_files(tmp_path) == []
    left = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert left == [], left


# ---------------------------------------------------------------------- EarlyStopping's reason


def scripted_module(fw: Framework, values: list[float]) -> Any:
    class Scripted(regression_module(fw)):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", torch.tensor(values[self.current_epoch]))

    return Scripted()


def normalised(message: str | None) -> str | None:
    """A message with its numbers replaced (Lightning prints tensors, Ember floats)."""
    if message is None:
        return None
    message = re.sub(r"tensor\(([^)]*)\)", r"\1", message)
    return re.sub(r"-?(\d+\.?\d*|inf|nan)", "N", message)


@pytest.mark.parametrize(
    ("values", "options"),
    [
        ([5.0, 4.0, 4.5, 4.0, 3.0], dict(patience=2)),
        ([5.0, 2.0, 1.5, 1.0], dict(patience=100, stopping_threshold=2.0)),
        ([5.0, 9.0, 11.0, 1.0], dict(patience=100, divergence_threshold=10.0)),
        ([5.0, math.nan, 1.0], dict(patience=100)),
        ([3.0, 2.0, 1.0], dict(patience=1)),
        ([1.0, 2.0, 3.0, 4.0], dict(mode="max", patience=1, stopping_threshold=3.0)),
    ],
    ids=["patience", "stopping-threshold", "divergence", "non-finite", "not-stopped", "max-threshold"],
)
def test_early_stopping_reason_and_message(tmp_path: Path, values: list[float], options: dict) -> None:
    seen = {}
    for fw in BOTH:
        es = fw.EarlyStopping(monitor="val_loss", **options)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=len(values), limit_train_batches=1, limit_val_batches=1,
                             num_sanity_val_steps=0, callbacks=[es])  # fmt: skip
        quiet_fit(trainer, scripted_module(fw, values), data(16), data(16))
        state = es.state_dict()
        seen[fw.name] = (
            es.stopping_reason.name,
            es.stopping_reason.value,
            es.stopped_epoch,
            trainer.current_epoch,
            normalised(es.stopping_reason_message),
            state["stopping_reason"],
            normalised(state["stopping_reason_message"]),
        )
    assert seen["ember"] == seen["lightning"]


def test_early_stopping_verbose_prints_lightnings_messages(tmp_path: Path, capsys: Any, caplog: Any) -> None:
    messages = {}
    values = [5.0, 4.0, 4.5, 4.6]
    for fw in BOTH:
        es = fw.EarlyStopping(monitor="val_loss", patience=2, verbose=True)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=len(values), limit_train_batches=1, limit_val_batches=1,
                             num_sanity_val_steps=0, callbacks=[es])  # fmt: skip
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pytorch_lightning.callbacks.early_stopping"):
            quiet_fit(trainer, scripted_module(fw, values), data(16), data(16))
        if fw is LIGHTNING:
            lines = [r.getMessage() for r in caplog.records if r.name.endswith("early_stopping")]
        else:
            lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("ember: fit")]
        messages[fw.name] = [normalised(line) for line in lines]
    assert messages["ember"] == messages["lightning"]
    assert len(messages["ember"]) == 3  # two improvements, then the stop
    assert ember.callbacks.EarlyStoppingReason.PATIENCE_EXHAUSTED.value == 3


# ---------------------------------------------------------------------- profilers

PROFILERS = {LIGHTNING.name: pl.profilers, EMBER.name: ember.profilers}


def profiled_run(fw: Framework, root: Path, profiler: Any, stages: tuple[str, ...] = ("fit",)) -> Any:
    """A tiny fit (and validate/test/predict) with a callback and module hooks, and a user action."""

    class Timed(fw.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            pass

        def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            pass

    class Model(regression_module(fw)):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            with self.trainer.profiler.profile("my_action"):
                return super().training_step(batch, batch_idx)

        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            return self(batch[0])

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            pass

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            pass

    torch.manual_seed(0)
    trainer = fw.trainer(root, max_epochs=2, limit_train_batches=2, limit_val_batches=1, profiler=profiler,
                         callbacks=[Timed()])  # fmt: skip
    model = Model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, data(32), data(16))
        for stage in stages[1:]:
            if stage == "predict":
                trainer.predict(model, data(16))
            else:
                getattr(trainer, stage)(model, data(16), verbose=False)
    return trainer


MAIN_ACTIONS = {
    "run_training_epoch",
    "run_training_batch",
    "[_TrainingEpochLoop].train_dataloader_next",
    "[Strategy]SingleDeviceStrategy.training_step",
    "[Strategy]SingleDeviceStrategy.backward",
    "[LightningModule]Model.optimizer_step",
    "[LightningModule]Model.on_train_batch_end",
    "[LightningModule]Model.on_before_optimizer_step",
    "[Callback]profiled_run.<locals>.Timed.on_train_epoch_end",
    "[Callback]profiled_run.<locals>.Timed.on_validation_batch_end",
    "[Strategy]SingleDeviceStrategy.validation_step",
    "[_EvaluationLoop].val_next",
    "[Strategy]SingleDeviceStrategy.test_step",
    "[_EvaluationLoop].test_next",
    "[Strategy]SingleDeviceStrategy.predict_step",
    "[_PredictionLoop].predict_next",
    "my_action",
}


def test_simple_profiler_times_the_actions_lightning_names(tmp_path: Path) -> None:
    recorded, calls = {}, {}
    for fw in BOTH:
        prof = PROFILERS[fw.name].SimpleProfiler(dirpath=tmp_path / fw.name / "prof", filename="perf")
        profiled_run(fw, tmp_path / fw.name, prof, stages=("fit", "validate", "test", "predict"))
        recorded[fw.name] = set(prof.recorded_durations)
        calls[fw.name] = {a: len(prof.recorded_durations[a]) for a in MAIN_ACTIONS}
    # Lightning also times the hooks nobody overrode; Ember times only what runs
    assert recorded["ember"] <= recorded["lightning"], recorded["ember"] - recorded["lightning"]
    assert MAIN_ACTIONS <= recorded["ember"] & recorded["lightning"]
    assert calls["ember"] == calls["lightning"]


def test_simple_profiler_writes_a_report_per_stage(tmp_path: Path) -> None:
    files, headers = {}, {}
    for fw in BOTH:
        prof = PROFILERS[fw.name].SimpleProfiler(dirpath=tmp_path / fw.name / "prof", filename="perf")
        profiled_run(fw, tmp_path / fw.name, prof, stages=("fit", "test"))
        files[fw.name] = sorted(os.listdir(tmp_path / fw.name / "prof"))
        text = (tmp_path / fw.name / "prof" / "fit-perf.txt").read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        headers[fw.name] = (lines[0], [c.strip() for c in lines[2].split("|") if c.strip()])
        assert "run_training_epoch" in text and "my_action" in text
    assert files["ember"] == files["lightning"] == ["fit-perf.txt", "test-perf.txt"]
    assert headers["ember"] == headers["lightning"]
    assert headers["ember"][1] == ["Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"]


def test_a_report_without_dirpath_goes_to_the_log_dir(tmp_path: Path) -> None:
    files = {}
    for fw in BOTH:
        prof = PROFILERS[fw.name].SimpleProfiler(filename="perf")
        trainer = profiled_run(fw, tmp_path / fw.name, prof)
        files[fw.name] = sorted(p for p in os.listdir(trainer.log_dir) if p.endswith(".txt"))
    assert files["ember"] == files["lightning"] == ["fit-perf.txt"]


def test_simple_by_name_prints_the_report(tmp_path: Path, capsys: Any, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="pytorch_lightning.profilers"):
        profiled_run(LIGHTNING, tmp_path / "lightning", "simple")
    lightning = "\n".join(r.getMessage() for r in caplog.records if "Profiler Report" in r.getMessage())
    capsys.readouterr()
    trainer = profiled_run(EMBER, tmp_path / "ember", "simple")
    printed = capsys.readouterr().out
    assert isinstance(trainer.profiler, ember.profilers.SimpleProfiler)
    for report in (lightning, printed):
        assert "FIT Profiler Report" in report and "run_training_batch" in report and "Percentage %" in report


def test_advanced_profiler_reports_cprofile_stats_per_action(tmp_path: Path) -> None:
    for fw in BOTH:
        prof = PROFILERS[fw.name].AdvancedProfiler(dirpath=tmp_path / fw.name / "prof", filename="cprof")
        profiled_run(fw, tmp_path / fw.name, prof)
        text = (tmp_path / fw.name / "prof" / "fit-cprof.txt").read_text()
        assert text.startswith("FIT Profiler Report"), fw.name
        for action in ("run_training_epoch", "[Strategy]SingleDeviceStrategy.training_step", "my_action"):
            assert f"Profile stats for: {action}" in text, (fw.name, action)
        assert "Ordered by: cumulative time" in text and "ncalls" in text


def test_pytorch_profiler_writes_a_torch_profiler_table(tmp_path: Path) -> None:
    prof = ember.profilers.PyTorchProfiler(dirpath=tmp_path / "prof", filename="torch", row_limit=-1)
    profiled_run(EMBER, tmp_path, prof, stages=("fit", "test"))
    assert sorted(os.listdir(tmp_path / "prof")) == [
        "fit-torch.pt.trace.json", "fit-torch.txt", "test-torch.pt.trace.json", "test-torch.txt",
    ]  # fmt: skip
    text = (tmp_path / "prof" / "fit-torch.txt").read_text()
    assert text.startswith("FIT Profiler Report") and "Self CPU" in text and "CPU total" in text
    for action in ("run_training_batch", "[Strategy]SingleDeviceStrategy.backward", "aten::mse_loss", "my_action"):
        assert action in text, action
    assert torch.autograd.profiler_util is not None  # the torch profiler is off again: a second run works
    profiled_run(EMBER, tmp_path / "again", "pytorch")


def test_profiler_arguments_as_lightning(tmp_path: Path) -> None:
    for fw in BOTH:
        trainer = fw.trainer(tmp_path / fw.name)
        assert type(trainer.profiler).__name__ == "PassThroughProfiler"
        for name, cls in (("simple", "SimpleProfiler"), ("advanced", "AdvancedProfiler"), ("pytorch", "PyTorchProfiler")):
            assert type(fw.trainer(tmp_path / fw.name, profiler=name).profiler).__name__ == cls
        with pytest.raises((ValueError, pl.utilities.exceptions.MisconfigurationException)):
            fw.Trainer(profiler="fastest", logger=False)
    prof = ember.profilers.SimpleProfiler()
    prof.start("a")
    with pytest.raises(ValueError, match="already started"):
        prof.start("a")
    prof.stop("a")
    with pytest.raises(ValueError, match="never started"):
        prof.stop("a")


def hook_parameters(cls: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if name.startswith("on_") or name in ("setup", "teardown")
    }


@pytest.mark.parametrize("name", ["Callback", "EarlyStopping"])
def test_callback_hooks_take_lightnings_keyword_names(tmp_path: Path, name: str) -> None:
    ember_cls = getattr(ember.callbacks, name)
    lightning_cls = getattr(pl.callbacks, name) if name != "Callback" else pl.Callback
    ours, theirs = hook_parameters(ember_cls), hook_parameters(lightning_cls)
    assert {k: v for k, v in ours.items() if k in theirs} == {k: theirs[k] for k in ours if k in theirs}
    log: list = []
    for fw in BOTH:  # a subclass that calls the base hooks with keywords, as Lightning code does

        class Forwarding(fw.Callback):
            tag = fw.name

            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
                super().on_train_batch_end(trainer=trainer, pl_module=pl_module, outputs=outputs, batch=batch,
                                           batch_idx=batch_idx)  # fmt: skip
                log.append((self.tag, batch_idx))

            def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
                super().on_fit_start(trainer, pl_module=pl_module)

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_train_batches=2, callbacks=[Forwarding()])
        quiet_fit(trainer, regression_module(fw)(), data(32))
    assert log == [("lightning", 0), ("lightning", 1), ("ember", 0), ("ember", 1)]


def stepping_module(fw: Framework, kind: str) -> Any:
    base = regression_module(fw)
    if kind == "manual":
        return plateau_module(fw, manual=True, as_dict=True)

    class Stepping(base):
        def configure_optimizers(self) -> Any:
            if kind == "lbfgs":
                return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)
            return super().configure_optimizers()

        if kind == "custom_step":

            def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
                optimizer.step(closure=optimizer_closure)

    return Stepping()


@pytest.mark.parametrize("kind", ["accumulate", "custom_step", "lbfgs", "clip", "manual"])
def test_profiled_steps_count_as_lightnings(tmp_path: Path, kind: str) -> None:
    options = {"accumulate": dict(accumulate_grad_batches=2), "clip": dict(gradient_clip_val=0.5)}.get(kind, {})
    counts = {}
    for fw in BOTH:
        prof = PROFILERS[fw.name].SimpleProfiler()
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_train_batches=4, profiler=prof, **options)
        quiet_fit(trainer, stepping_module(fw, kind), data(64))
        counts[fw.name] = {a: len(d) for a, d in prof.recorded_durations.items()}
    ours, theirs = counts["ember"], counts["lightning"]
    extra = set(ours) - set(theirs)
    # under manual optimization Ember also times manual_backward; Lightning does not
    assert extra == ({"[Strategy]SingleDeviceStrategy.backward"} if kind == "manual" else set())
    assert {a: n for a, n in ours.items() if a in theirs} == {a: theirs[a] for a in ours if a in theirs}
    assert {"run_training_batch", "run_training_epoch"} <= set(ours)
