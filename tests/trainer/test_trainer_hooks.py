"""Hook order (as documented in ember.trainer.trainer), priorities, and hooks that cost nothing
when nobody overrides them."""

from __future__ import annotations

import pytest
import torch

import ember
from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from helpers import CALLBACK_HOOKS, MODULE_HOOKS, HookModule, HookRecorder, LinearModel, loader, quiet_trainer

CBS = ("cb1", "cb2")


def start(hook: str, cbs=CBS, module: bool = True) -> list[tuple[str, str]]:
    """A hook where callbacks run first (``*_start`` and every hook that is not an ``*_end`` hook)."""
    return [(c, hook) for c in cbs] + ([("module", hook)] if module else [])


def end(hook: str, cbs=CBS, module: bool = True) -> list[tuple[str, str]]:
    """An ``*_end`` hook: as in Lightning, callbacks first too (only the monitoring callbacks,
    ModelCheckpoint and EarlyStopping, run after the module on on_train_epoch_end)."""
    return [(c, hook) for c in cbs] + ([("module", hook)] if module else [])


def mod(*hooks: str) -> list[tuple[str, str]]:
    return [("module", h) for h in hooks]


def transfer() -> list[tuple[str, str]]:
    return mod("on_before_batch_transfer", "on_after_batch_transfer")


def train_batch(cbs=CBS, optimizer_step: bool = True, zero_grad: bool = True) -> list[tuple[str, str]]:
    """Automatic optimization in Lightning's order: the closure (training_step, zero_grad on the
    first micro-batch of a window, backward), then on_before_optimizer_step and the update."""
    seq = transfer() + start("on_train_batch_start", cbs) + mod("training_step")
    if zero_grad:
        seq += start("on_before_zero_grad", cbs)
    seq += start("on_before_backward", cbs) + start("on_after_backward", cbs)
    if optimizer_step:
        seq += start("on_before_optimizer_step", cbs)
    return seq + end("on_train_batch_end", cbs)


def eval_run(prefix: str, step: str, batches: int, cbs=CBS) -> list[tuple[str, str]]:
    seq = mod(f"on_{prefix}_model_eval") + start(f"on_{prefix}_start", cbs) + start(f"on_{prefix}_epoch_start", cbs)
    for _ in range(batches):
        seq += transfer() + start(f"on_{prefix}_batch_start", cbs) + mod(step) + end(f"on_{prefix}_batch_end", cbs)
    seq += end(f"on_{prefix}_epoch_end", cbs) + end(f"on_{prefix}_end", cbs)
    return seq + (mod(f"on_{prefix}_model_train") if prefix != "predict" else [])


def make(tmp_path, log, callbacks=None, **kwargs):
    callbacks = callbacks if callbacks is not None else [HookRecorder(log, "cb1"), HookRecorder(log, "cb2")]
    return HookModule(log), quiet_trainer(tmp_path, callbacks=callbacks, **kwargs)


def test_recorders_cover_every_hook():
    # guards the tests below: a hook added to Module/Callback is recorded too
    assert {"on_fit_start", "on_before_zero_grad", "on_exception", "on_sanity_check_start", "setup"} <= set(
        CALLBACK_HOOKS
    )
    assert {"on_fit_start", "on_before_zero_grad", "on_before_batch_transfer", "teardown"} <= set(MODULE_HOOKS)


def test_fit_hook_order_with_validation_and_sanity_check(tmp_path):
    log: list = []
    model, trainer = make(
        tmp_path, log, max_epochs=1, num_sanity_val_steps=1, limit_train_batches=2, limit_val_batches=1
    )
    trainer.fit(model, loader(32, batch_size=8), loader(16, batch_size=8))
    expected = (
        start("setup")
        + mod("configure_optimizers")
        + start("on_fit_start")
        + start("on_sanity_check_start", module=False)
        + eval_run("validation", "validation_step", 1)
        + end("on_sanity_check_end", module=False)
        + start("on_train_start")
        + start("on_train_epoch_start")
        + train_batch()
        + train_batch()
        + eval_run("validation", "validation_step", 1)
        + end("on_train_epoch_end")
        + end("on_train_end")
        + end("on_fit_end")
        + start("teardown")
    )
    assert log == expected
    assert trainer.global_step == 2


def test_two_epochs_repeat_the_epoch_hooks(tmp_path):
    log: list = []
    model, trainer = make(tmp_path, log, max_epochs=2, num_sanity_val_steps=0, limit_train_batches=1)
    trainer.fit(model, loader(16, batch_size=8))
    epoch = start("on_train_epoch_start") + train_batch() + end("on_train_epoch_end")
    expected = (
        start("setup")
        + mod("configure_optimizers")
        + start("on_fit_start")
        + start("on_train_start")
        + epoch
        + epoch
        + end("on_train_end")
        + end("on_fit_end")
        + start("teardown")
    )
    assert log == expected


def test_accumulation_steps_the_optimizer_every_k_batches(tmp_path):
    log: list = []
    model, trainer = make(tmp_path, log, max_epochs=1, accumulate_grad_batches=2, callbacks=[])
    trainer.fit(model, loader(24, batch_size=8))  # 3 batches: step after 2, then the leftover one at epoch end
    step_hooks = [h for _, h in log if h in ("training_step", "on_before_optimizer_step", "on_before_zero_grad")]
    # zero_grad on the first micro-batch of each window, inside the closure after training_step
    assert step_hooks == [
        "training_step",
        "on_before_zero_grad",
        "training_step",
        "on_before_optimizer_step",
        "training_step",
        "on_before_zero_grad",
        "on_before_optimizer_step",
    ]
    assert trainer.global_step == 2


def test_validate_hook_order(tmp_path):
    log: list = []
    model, trainer = make(tmp_path, log)
    trainer.validate(model, loader(16, batch_size=8), verbose=False)
    assert log == start("setup") + eval_run("validation", "validation_step", 2) + start("teardown")


def test_test_hook_order(tmp_path):
    log: list = []
    model, trainer = make(tmp_path, log)
    trainer.test(model, loader(24, batch_size=8), verbose=False)
    assert log == start("setup") + eval_run("test", "test_step", 3) + start("teardown")


def test_predict_hook_order(tmp_path):
    log: list = []
    model, trainer = make(tmp_path, log)
    preds = trainer.predict(model, loader(16, batch_size=8))
    assert log == start("setup") + eval_run("predict", "predict_step", 2) + start("teardown")
    assert len(preds) == 2 and preds[0].shape == (8, 1)


def test_callbacks_run_by_priority_then_list_order(tmp_path):
    log: list = []
    callbacks = [
        HookRecorder(log, "a"),
        HookRecorder(log, "hi", priority=10),
        HookRecorder(log, "b"),
        HookRecorder(log, "lo", priority=-5),
    ]
    model, trainer = make(tmp_path, log, callbacks=callbacks, max_epochs=1, limit_train_batches=1)
    trainer.fit(model, loader(16, batch_size=8))
    order = ("hi", "a", "b", "lo")
    assert [who for who, h in log if h == "on_train_start"] == [*order, "module"]
    assert [who for who, h in log if h == "on_before_backward"] == [*order, "module"]
    assert [who for who, h in log if h == "on_train_batch_end"] == [*order, "module"]
    assert [who for who, h in log if h == "on_fit_end"] == [*order, "module"]


def test_monitoring_callbacks_see_what_the_module_logged_in_on_train_epoch_end(tmp_path):
    seen = []

    class Logs(LinearModel):
        def on_train_epoch_end(self):
            self.log("from_module", torch.tensor(float(self.current_epoch) + 7.0))

    class Reader(ember.Callback):  # a plain callback runs before the module, as in Lightning
        def on_train_epoch_end(self, trainer, module):
            seen.append(float(trainer.callback_metrics.get("from_module", -1.0)))

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="from_module", mode="max")
    early = EarlyStopping(monitor="from_module", mode="max", patience=5)
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[Reader(), ckpt, early], enable_checkpointing=True)
    trainer.fit(Logs(), loader(16))
    assert seen == [-1.0, 7.0]  # the value of the epoch before
    assert float(ckpt.best_model_score) == 8.0  # ModelCheckpoint ran after the module
    assert float(early.best_score) == 8.0


def test_configure_callbacks_adds_and_replaces(tmp_path):
    log: list = []

    class Extra(HookRecorder):
        pass

    class WithCallbacks(HookModule):
        def configure_callbacks(self):
            return [Extra(log, "from_model")]

    trainer = quiet_trainer(
        tmp_path, callbacks=[HookRecorder(log, "cb1"), Extra(log, "replaced")], max_epochs=1, limit_train_batches=1
    )
    trainer.fit(WithCallbacks(log), loader(16))
    assert [who for who, h in log if h == "on_fit_start"] == ["cb1", "from_model", "module"]


# ---------------------------------------------------------------------- only overridden hooks are called


def test_hooks_not_overridden_are_never_called(tmp_path, monkeypatch):
    calls: list[str] = []

    def counter(name):
        def hook(self, *args, **kwargs):
            calls.append(name)

        return hook

    # replace the base-class no-ops: they still count as "not overridden", so they must never run
    for name in CALLBACK_HOOKS:
        if name != "on_train_epoch_end":
            monkeypatch.setattr(Callback, name, counter(f"Callback.{name}"))
    for name in MODULE_HOOKS:
        if name not in ("on_before_batch_transfer", "on_after_batch_transfer"):
            monkeypatch.setattr(ember.Module, name, counter(f"Module.{name}"))

    handlers_during_fit = {}
    epoch_ends = []

    class OnlyEpochEnd(Callback):
        def on_train_epoch_end(self, trainer, module):
            epoch_ends.append(trainer.current_epoch)
            train, val = trainer.train_engine._handlers, trainer.validate_engine._handlers
            handlers_during_fit.update(
                train_started=len(train["ITERATION_STARTED"].calls),
                train_completed=len(train["ITERATION_COMPLETED"].calls),
                train_get_batch=len(train["GET_BATCH_COMPLETED"].calls),
                val_started=len(val["ITERATION_STARTED"].calls),
                val_completed=len(val["ITERATION_COMPLETED"].calls),
            )

    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[OnlyEpochEnd()], num_sanity_val_steps=2)
    trainer.fit(model, loader(32), loader(16))
    trainer.validate(model, loader(16), verbose=False)
    trainer.test(model, loader(16), verbose=False)
    trainer.predict(model, loader(16))
    assert calls == []
    assert epoch_ends == [0, 1, 2]
    assert handlers_during_fit == {
        "train_started": 0,  # nobody overrides on_train_batch_start: no handler at all
        "train_completed": 1,  # only the Trainer's own (logging, validation scheduling, stop checks)
        "train_get_batch": 0,  # CPU, no transfer hooks: batches are not touched
        "val_started": 0,
        "val_completed": 1,  # only the loop's own: it writes evaluation step values (Lightning's rows)
    }


def test_handlers_are_removed_after_each_run(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(LinearModel(), loader(16), loader(16))
    for engine in (trainer.train_engine, trainer.validate_engine):
        assert all(not hl.calls for hl in engine._handlers.values())


# ---------------------------------------------------------------------- on_train_batch_start -> -1


def test_on_train_batch_start_minus_one_ends_the_epoch(tmp_path):
    class SkipRest(LinearModel):
        def on_train_batch_start(self, batch, batch_idx):
            return -1 if batch_idx == 3 else None

    model = SkipRest()
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, loader(64, batch_size=8))
    assert model.training_step_calls == 3 * 3
    assert trainer.global_step == 9
    assert trainer.current_epoch == 3


def test_callback_on_train_batch_start_minus_one_is_ignored_as_in_lightning(tmp_path):
    class SkipFromStart(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            return -1 if batch_idx == 0 and trainer.current_epoch == 1 else None

    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[SkipFromStart()])
    trainer.fit(model, loader(32, batch_size=8))
    assert model.training_step_calls == 4 + 4 + 4
    assert trainer.current_epoch == 3


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_eval_batch_hooks_get_outputs_and_indices(tmp_path, stage):
    got = []
    prefix = "validation" if stage == "validate" else "test"

    class Outputs(LinearModel):
        def validation_step(self, batch, batch_idx):
            return batch_idx * 10

        test_step = validation_step

    class Recorder(Callback):
        pass

    def batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        got.append((outputs, batch_idx, len(batch[0])))

    setattr(Recorder, f"on_{prefix}_batch_end", batch_end)
    getattr(quiet_trainer(tmp_path, callbacks=[Recorder()]), stage)(Outputs(), loader(20, batch_size=8), verbose=False)
    assert got == [(0, 0, 8), (10, 1, 8), (20, 2, 4)]


def test_train_batch_end_gets_the_training_step_output(tmp_path):
    outputs = []

    class Rec(Callback):
        def on_train_batch_end(self, trainer, module, out, batch, batch_idx):
            outputs.append((type(out), batch_idx))

    quiet_trainer(tmp_path, max_epochs=1, callbacks=[Rec()]).fit(LinearModel(), loader(16))
    assert outputs == [(dict, 0), (dict, 1)]  # Lightning's {"loss": detached loss}
