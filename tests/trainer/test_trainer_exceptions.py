"""Exceptions leave fit/validate/test/predict unchanged, after on_exception ran exactly once."""

from __future__ import annotations

import pytest

import ember
from ember.engine import Events
from ember.loggers import CSVLogger
from helpers import LinearModel, loader, quiet_trainer


class Boom(Exception):
    pass


class Recorder(ember.Callback):
    def __init__(self):
        self.exceptions: list[BaseException] = []
        self.teardowns: list[str] = []

    def on_exception(self, trainer, module, exception):
        self.exceptions.append(exception)

    def teardown(self, trainer, module, stage):
        self.teardowns.append(stage)


class Failing(LinearModel):
    """Raises ``Boom`` in the given step at the given batch index."""

    def __init__(self, where: str = "training_step", at: int = 2):
        super().__init__()
        self.where = where
        self.at = at
        self.raised: list[BaseException] = []
        self.exceptions: list[BaseException] = []

    def _maybe_raise(self, name, batch_idx):
        if name == self.where and batch_idx == self.at:
            exc = Boom(f"boom in {name} at batch {batch_idx}")
            self.raised.append(exc)
            raise exc

    def training_step(self, batch, batch_idx):
        self._maybe_raise("training_step", batch_idx)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self._maybe_raise("validation_step", batch_idx)

    def test_step(self, batch, batch_idx):
        self._maybe_raise("test_step", batch_idx)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self._maybe_raise("predict_step", batch_idx)
        return self(batch[0])

    def on_exception(self, exception):
        self.exceptions.append(exception)


def test_exception_in_training_step_propagates_unchanged(tmp_path):
    model = Failing("training_step", at=2)
    cb1, cb2 = Recorder(), Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[cb1, cb2])
    with pytest.raises(Boom) as info:
        trainer.fit(model, loader(32))
    assert info.value is model.raised[0]
    assert str(info.value) == "boom in training_step at batch 2"
    assert model.exceptions == [info.value]
    assert cb1.exceptions == [info.value]
    assert cb2.exceptions == [info.value]
    assert cb1.teardowns == ["fit"]  # teardown still runs
    assert trainer.global_step == 2


def test_user_exception_handler_on_the_engine_does_not_swallow_the_error(tmp_path):
    model = Failing("training_step", at=1)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    seen = []
    trainer.engine.add_event_handler(Events.EXCEPTION_RAISED, lambda engine, exc: seen.append(exc))
    with pytest.raises(Boom) as info:
        trainer.fit(model, loader(32))
    assert seen == [info.value]
    assert model.exceptions == [info.value]


@pytest.mark.parametrize("num_sanity_val_steps", [0, 2])
def test_exception_in_validation_during_fit_is_reported_once(tmp_path, num_sanity_val_steps):
    model = Failing("validation_step", at=1)
    cb = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[cb], num_sanity_val_steps=num_sanity_val_steps)
    with pytest.raises(Boom) as info:
        trainer.fit(model, loader(16), loader(32))
    assert model.exceptions == [info.value]
    assert cb.exceptions == [info.value]
    assert model.training_step_calls == (0 if num_sanity_val_steps else 2)


@pytest.mark.parametrize(
    ("method", "step"), [("validate", "validation_step"), ("test", "test_step"), ("predict", "predict_step")]
)
def test_exception_in_eval_stages(tmp_path, method, step):
    model = Failing(step, at=0)
    cb = Recorder()
    trainer = quiet_trainer(tmp_path, callbacks=[cb])
    kwargs = {} if method == "predict" else {"verbose": False}
    with pytest.raises(Boom) as info:
        getattr(trainer, method)(model, loader(16), **kwargs)
    assert model.exceptions == [info.value]
    assert cb.exceptions == [info.value]
    assert cb.teardowns == [method]


def test_exception_in_a_callback_hook_propagates(tmp_path):
    class Broken(ember.Callback):
        def on_train_epoch_end(self, trainer, module):
            raise KeyError("broken callback")

    model = Failing("nowhere")
    with pytest.raises(KeyError, match="broken callback"):
        quiet_trainer(tmp_path, max_epochs=3, callbacks=[Broken()]).fit(model, loader(16))
    assert len(model.exceptions) == 1 and isinstance(model.exceptions[0], KeyError)
    assert model.training_step_calls == 2


def test_trainer_is_usable_after_a_failed_fit(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(Boom):
        trainer.fit(Failing("training_step", at=0), loader(16))
    good = LinearModel()
    trainer.fit(good, loader(16))
    assert trainer.global_step == 2
    assert good.training_step_calls == 2


def test_logs_are_flushed_when_fit_fails(tmp_path):
    class LogsThenFails(Failing):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss)
            return loss

    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1)
    with pytest.raises(Boom):
        trainer.fit(LogsThenFails("training_step", at=3), loader(64))
    text = logger.metrics_file.read_text().splitlines()
    assert text[0].split(",") == ["step", "loss", "epoch"]
    assert [line.split(",")[0] for line in text[1:]] == ["0", "1", "2"]
