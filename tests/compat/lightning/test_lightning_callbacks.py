"""Callbacks other than ModelCheckpoint, Lightning against Ember: EarlyStopping (when it checks, what
counts as an improvement, its state and its resume), the order and merging of ``trainer.callbacks``,
state keys, ``on_exception``, the model summary's rows, and ``fit`` called twice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module
from torch import nn

from ember.callbacks.model_summary import summarize


def scripted_module(fw: Framework, train_values: Any = None, val_values: Any = None) -> Any:
    """Logs ``train_m`` (an epoch value, by epoch) and ``val_m`` (by validation run) from the lists."""

    class Scripted(regression_module(fw)):
        def __init__(self) -> None:
            super().__init__()
            self.val_runs = 0

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if train_values is not None:
                value = float(train_values[min(self.current_epoch, len(train_values) - 1)])
                self.log("train_m", value, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            if val_values is not None:
                self.log("val_m", float(val_values[min(self.val_runs, len(val_values) - 1)]))

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.val_runs += 1

    return Scripted()


def early_stop(fw: Framework, root: Path, es_kwargs: dict, values: dict, **options: Any) -> Any:
    """What a user sees after ``fit`` with one EarlyStopping (4 batches an epoch), or the error."""
    module, es = scripted_module(fw, **values), fw.EarlyStopping(**es_kwargs)
    trainer = fw.trainer(root / fw.name, **{"max_epochs": 10, "num_sanity_val_steps": 0, "callbacks": [es], **options})
    try:
        quiet_fit(trainer, module, data(32), data(16))
    except Exception as err:
        return type(err).__name__, str(err).split(".")[0]
    return dict(epoch=trainer.current_epoch, step=trainer.global_step, val_runs=module.val_runs,
                wait=es.wait_count, stopped=es.stopped_epoch, best=float(es.best_score),
                reason=es.stopping_reason.value, min_delta=es.min_delta, patience=es.patience)  # fmt: skip


FLAT = [3, 2, 2, 2, 2, 2, 2, 2]
CASES = {
    "train-metric-at-epoch-end": (dict(monitor="train_m", check_on_train_epoch_end=True), dict(train_values=FLAT), {}),
    "train-metric-default": (dict(monitor="train_m"), dict(train_values=FLAT), {}),
    # checked after validation, where an epoch value of training is not there yet: Lightning's error
    "train-metric-after-validation": (dict(monitor="train_m", check_on_train_epoch_end=False), dict(train_values=FLAT), {}),
    "val-metric-at-epoch-end": (dict(monitor="val_m", check_on_train_epoch_end=True), dict(val_values=FLAT), {}),
    "val-metric-after-validation": (dict(monitor="val_m", check_on_train_epoch_end=False), dict(val_values=FLAT), {}),
    "min-delta-min-positive": (dict(monitor="val_m", min_delta=0.5, patience=1), dict(val_values=[3, 2.7, 2, 1.8]), {}),
    # a negative min_delta is a tolerance: a slightly worse value still counts as an improvement
    "min-delta-min-negative": (dict(monitor="val_m", min_delta=-0.5, patience=1), dict(val_values=[3, 3.2, 3.4, 3.8, 4.5]), {}),
    "min-delta-max-positive": (dict(monitor="val_m", mode="max", min_delta=0.5, patience=1), dict(val_values=[3, 3.7, 3.9, 4.5]), {}),
    "min-delta-max-negative": (dict(monitor="val_m", mode="max", min_delta=-0.5, patience=1), dict(val_values=[3, 2.8, 2.6, 2]), {}),
    "every-2-epochs": (dict(monitor="val_m", patience=2), dict(val_values=FLAT), dict(check_val_every_n_epoch=2)),
    "twice-an-epoch": (dict(monitor="val_m", patience=2), dict(val_values=FLAT), dict(val_check_interval=0.5)),
    "twice-an-epoch-checked-at-epoch-end": (
        dict(monitor="val_m", patience=2, check_on_train_epoch_end=True), dict(val_values=FLAT), dict(val_check_interval=0.5)
    ),
    "min-epochs-holds-off": (dict(monitor="val_m", patience=1), dict(val_values=FLAT), dict(min_epochs=5)),
    "min-steps-holds-off": (dict(monitor="val_m", patience=1), dict(val_values=FLAT), dict(min_steps=14)),
    "missing-metric-strict": (dict(monitor="nope"), dict(val_values=[3]), {}),
    "missing-metric-not-strict": (dict(monitor="nope", strict=False), dict(val_values=[3]), {}),
    "non-finite": (dict(monitor="val_m"), dict(val_values=[3, float("nan"), 2]), {}),
    "non-finite-unchecked": (dict(monitor="val_m", check_finite=False, patience=2), dict(val_values=[3, float("nan"), 2, 2, 2]), {}),
    "divergence-threshold": (dict(monitor="val_m", divergence_threshold=5), dict(val_values=[3, 4, 6, 2]), {}),
    "stopping-threshold": (dict(monitor="val_m", stopping_threshold=1.5), dict(val_values=[3, 2, 1.5, 1]), {}),
    "log-rank-zero-only": (dict(monitor="val_m", patience=1, log_rank_zero_only=True), dict(val_values=FLAT), {}),
    "never-stops": (dict(monitor="val_m", patience=5), dict(val_values=[3, 2, 1, 0.5]), dict(max_epochs=4)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_early_stopping_stops_where_lightning_does(tmp_path: Path, case: str) -> None:
    es_kwargs, values, options = CASES[case]
    seen = {fw.name: early_stop(fw, tmp_path, es_kwargs, values, **options) for fw in BOTH}
    assert seen["ember"] == seen["lightning"]


def test_a_missing_metric_warns_when_not_strict_and_verbose(tmp_path: Path) -> None:
    for fw in BOTH:
        es = fw.EarlyStopping(monitor="nope", strict=False, verbose=True)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=2, num_sanity_val_steps=0, callbacks=[es])
        with pytest.warns(RuntimeWarning, match="`nope` which is not available"):
            trainer.fit(scripted_module(fw, val_values=[3]), data(32), data(16))
        assert trainer.current_epoch == 2


def two_monitors(fw: Framework, root: Path, ckpt_path: Any = None, **options: Any) -> tuple[Any, Any, Any]:
    ckpt = fw.ModelCheckpoint(dirpath=str(root / fw.name / "ckpt"), save_last=True)
    a = fw.EarlyStopping(monitor="val_m", patience=3)
    b = fw.EarlyStopping(monitor="train_m", mode="max", patience=4)
    trainer = fw.trainer(root / fw.name, num_sanity_val_steps=0, callbacks=[a, b, ckpt], enable_checkpointing=True,
                         **options)  # fmt: skip
    module = scripted_module(fw, train_values=[1, 2, 2, 2, 2, 2, 2, 2], val_values=[3, 2, 2, 2, 2, 2, 2])
    quiet_fit(trainer, module, data(32), data(16), ckpt_path=ckpt_path)
    return trainer, a, b


def test_two_early_stoppings_keep_their_own_state_and_resume_it(tmp_path: Path) -> None:
    seen = {}
    for fw in BOTH:
        trainer, a, b = two_monitors(fw, tmp_path, max_epochs=3)
        saved = torch.load(tmp_path / fw.name / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
        keys = sorted(k for k in saved if k.startswith("EarlyStopping"))
        states = [(saved[k]["wait_count"], float(saved[k]["best_score"]), saved[k]["patience"]) for k in keys]
        first = (keys, states, a.wait_count, b.wait_count)
        # resume with other patience: as Lightning, the checkpoint's patience (and wait count) win
        trainer, a, b = two_monitors(fw, tmp_path, max_epochs=10, ckpt_path=str(tmp_path / fw.name / "ckpt" / "last.ckpt"))
        seen[fw.name] = first, (trainer.current_epoch, a.wait_count, a.patience, b.wait_count, a.stopping_reason.value)
    assert seen["ember"] == seen["lightning"]
    assert seen["ember"][0][0] == ["EarlyStopping{'monitor': 'train_m', 'mode': 'max'}",
                                   "EarlyStopping{'monitor': 'val_m', 'mode': 'min'}"]  # fmt: skip


# ---------------------------------------------------------------------- trainer.callbacks


def kinds(callbacks: list[Any]) -> list[str]:
    names = {"TQDMProgressBar": "bar", "RichProgressBar": "bar", "ProgressBar": "bar", "RichModelSummary": "summary",
             "ModelSummary": "summary", "ModelCheckpoint": "checkpoint", "EarlyStopping": "early"}  # fmt: skip
    return [names.get(type(c).__name__, type(c).__name__) for c in callbacks]


@pytest.mark.parametrize(
    "options",
    [{}, {"enable_checkpointing": False}, {"enable_model_summary": False, "enable_progress_bar": False}],
    ids=["defaults", "no-checkpointing", "no-summary-no-bar"],
)
@pytest.mark.parametrize("user", [False, True], ids=["none", "user"])
def test_trainer_callbacks_in_lightnings_order(tmp_path: Path, options: dict, user: bool) -> None:
    seen = {}
    for fw in BOTH:

        class User(fw.Callback):
            pass

        given = [User(), fw.EarlyStopping("x")]
        if user and options.get("enable_checkpointing", True):
            given.insert(0, fw.ModelCheckpoint())  # Lightning moves checkpoint callbacks last
        trainer = fw.Trainer(default_root_dir=str(tmp_path), logger=False, callbacks=given if user else None, **options)
        seen[fw.name] = kinds(trainer.callbacks)
    assert seen["ember"] == seen["lightning"]


def test_configure_callbacks_replaces_the_trainers_of_its_types(tmp_path: Path) -> None:
    seen = {}
    for fw in BOTH:
        during: list = []

        class User(fw.Callback):
            pass

        class Recorder(fw.Callback):
            def on_train_start(self, trainer: Any, pl_module: Any, during: list = during) -> None:
                during.append([c in pl_module.returned for c in trainer.callbacks])

        class SubclassedStopping(fw.EarlyStopping):
            pass

        class Configured(regression_module(fw)):
            def configure_callbacks(self, fw: Framework = fw) -> Any:
                self.returned = [fw.ModelCheckpoint(monitor="val_loss"), SubclassedStopping("val_loss"), User()]
                return self.returned

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, enable_checkpointing=True,
                             callbacks=[Recorder(), fw.EarlyStopping("zz"), fw.ModelCheckpoint(), User()])  # fmt: skip
        module = Configured()
        quiet_fit(trainer, module, data(), data())
        after = [c in module.returned for c in trainer.callbacks]
        seen[fw.name] = kinds(trainer.callbacks), during, after, trainer.early_stopping_callback is module.returned[1]
    assert seen["ember"] == seen["lightning"]
    assert seen["ember"][0] == ["Recorder", "SubclassedStopping", "User", "checkpoint"]


def test_state_keys_and_duplicate_stateful_callbacks(tmp_path: Path) -> None:
    for fw in BOTH:

        class Plain(fw.Callback):
            pass

        class Stateful(fw.Callback):
            def state_dict(self) -> dict:
                return {"n": 1}

        assert [Plain().state_key, Plain().state_key] == [Plain.__qualname__] * 2
        assert fw.EarlyStopping("a", mode="max").state_key == "EarlyStopping{'monitor': 'a', 'mode': 'max'}"
        fw.trainer(tmp_path, callbacks=[Plain(), Plain()])  # no state: no conflict
        for twins in ([Stateful(), Stateful()], [fw.EarlyStopping("a"), fw.EarlyStopping("a")]):
            with pytest.raises(RuntimeError, match="more than one stateful callback"):
                fw.trainer(tmp_path, callbacks=twins)
        fw.trainer(tmp_path, callbacks=[fw.EarlyStopping("a"), fw.EarlyStopping("a", mode="max")])


# ---------------------------------------------------------------------- exceptions


def failing_fit(fw: Framework, root: Path) -> list:
    log: list = []

    class Watcher(fw.Callback):
        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            log.append(("on_exception", type(pl_module).__name__, repr(exception), str(trainer.state.status)))

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            log.append(("teardown", str(stage)))

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            log.append("on_train_end")

    class Failing(regression_module(fw)):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.global_step == 2:
                raise ValueError("boom")
            return super().training_step(batch, batch_idx)

        def on_exception(self, exception: BaseException) -> None:  # an ember.Module hook; not one in Lightning
            log.append(("module on_exception", repr(exception)))

    trainer = fw.trainer(root / fw.name, max_epochs=2, callbacks=[Watcher(), Watcher()])
    with pytest.raises(ValueError, match="boom"):
        quiet_fit(trainer, Failing(), data())
    return [*log, str(trainer.state.status)]


def test_on_exception_in_training_step(tmp_path: Path) -> None:
    lightning, ember_ = failing_fit(LIGHTNING, tmp_path), failing_fit(EMBER, tmp_path)
    called = ("on_exception", "Failing", "ValueError('boom')", "TrainerStatus.INTERRUPTED")
    assert lightning == [called, called, "TrainerStatus.INTERRUPTED"]
    # deliberate: Ember also calls the module's on_exception, and every teardown after a failed stage
    extra = [("module on_exception", "ValueError('boom')"), ("teardown", "TrainerFn.FITTING")]
    assert ember_ == [called, called, extra[0], extra[1], extra[1], "TrainerStatus.INTERRUPTED"]


# ---------------------------------------------------------------------- model summary


def summary_net(base: type) -> Any:
    class Net(base):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 300), nn.ReLU(), nn.Sequential(nn.Linear(300, 8), nn.Tanh()))
            self.head = nn.Linear(8, 1)
            self.norm = nn.BatchNorm1d(8)
            self.encoder[0].requires_grad_(False)  # a frozen submodule

    return Net()


def rows(text: str) -> list[list[str]]:
    """The table's rows (index, name, type, params) and total lines (value, words), lower case,
    without the box drawing, Lightning's Mode/FLOPs columns or its module-mode and FLOPs lines."""
    out = []
    for line in text.replace("|", " ").lower().splitlines():
        if not line.strip() or set(line.strip()) == {"-"} or "modules in" in line or "total flops" in line:
            continue
        total = re.fullmatch(r"\s*([\d.]+(?: [kmb])?)\s+(\D.*)", line)
        if total and (not line.split()[0].isdigit() or "params" in line):
            out.append([total[1], total[2].strip()])
        else:
            out.append([c for c in re.split(r"\s{2,}", line.strip()) if c not in ("mode", "flops")][:4])
    return out


@pytest.mark.parametrize("depth", [1, 2, 3, -1])
def test_model_summary_rows_match(depth: int) -> None:
    theirs = str(pl.utilities.model_summary.ModelSummary(summary_net(pl.LightningModule), max_depth=depth))
    ours = summarize(summary_net(EMBER.Module), max_depth=depth)
    expected = rows(theirs)
    assert expected[-1][1] == "total estimated model params size (mb)"
    expected[-1][1] = "mb total parameter size"  # Ember's words for the same number
    assert rows(ours) == expected
    assert ["2.4 k", "trainable params"] in expected and ["1.5 k", "non-trainable params"] in expected


def test_model_summary_printed_unless_turned_off(tmp_path: Path, capsys: Any) -> None:
    for off in (False, True):
        trainer = EMBER.trainer(tmp_path, max_epochs=1, limit_train_batches=1, enable_model_summary=not off)
        quiet_fit(trainer, regression_module(EMBER)(), data())
        assert ("trainable params" in capsys.readouterr().out) is not off
        assert ("summary" in kinds(trainer.callbacks)) is not off
        light = LIGHTNING.trainer(tmp_path, enable_model_summary=not off)
        assert ("summary" in kinds(light.callbacks)) is not off


# ---------------------------------------------------------------------- fit twice


def test_fit_twice_on_one_trainer(tmp_path: Path) -> None:
    steps = {}
    for fw in BOTH:

        class Counting(regression_module(fw)):
            calls = 0

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                type(self).calls += 1
                return super().training_step(batch, batch_idx)

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=2)
        quiet_fit(trainer, Counting(), data(32))
        quiet_fit(trainer, Counting(), data(32))
        steps[fw.name] = Counting.calls, trainer.current_epoch, trainer.global_step
    # Lightning: the second fit finds max_epochs reached and trains nothing.
    # Ember (deliberate): every fit is a new run, its counters from zero, unless given a ckpt_path.
    assert steps["lightning"] == (8, 2, 8)
    assert steps["ember"] == (16, 2, 8)
