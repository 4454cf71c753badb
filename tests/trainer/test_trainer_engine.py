"""The Trainer is built on the Engine: user handlers on its engines, and reproducibility."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ember
from ember.engine import Engine, Events
from helpers import LinearModel, loader, quiet_trainer


def test_filtered_user_handler_on_the_train_engine_fires_on_the_expected_iterations(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    fired = []

    @trainer.engine.on(Events.ITERATION_COMPLETED(every=2))
    def every_other(engine):
        fired.append((engine.state.iteration, engine.state.epoch, trainer.global_step, type(engine.state.output)))

    trainer.fit(LinearModel(), loader(40, batch_size=8))  # 5 iterations per epoch
    # state.output is what on_train_batch_end receives (Lightning's outputs): {"loss": detached loss}
    assert fired == [(i, 1 if i <= 5 else 2, i, dict) for i in (2, 4, 6, 8, 10)]
    assert trainer.engine is trainer.train_engine
    assert trainer.engine.has_event_handler(every_other)  # user handlers stay attached


def test_once_and_epoch_filters(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=4)
    once, epochs = [], []
    trainer.engine.add_event_handler(Events.ITERATION_STARTED(once=3), lambda e: once.append(e.state.iteration))
    trainer.engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), lambda e: epochs.append(e.state.epoch))
    trainer.fit(LinearModel(), loader(16, batch_size=8))
    assert once == [3]
    assert epochs == [2, 4]


def test_user_handler_sees_the_trainer_state_after_the_step(tmp_path):
    losses = []

    class Model(LinearModel):
        pass

    model = Model()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.fit(model, loader(32))
    assert torch.equal(torch.stack(losses), torch.stack(model.train_losses))


def test_engine_terminate_from_a_user_handler_stops_fit(tmp_path):
    ended = []

    class Model(LinearModel):
        def on_train_end(self):
            ended.append(self.global_step)

    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    model = Model()
    trainer.fit(model, loader(32))
    assert trainer.global_step == 3
    assert model.training_step_calls == 3
    assert ended == [3]


def test_validate_test_predict_engines_exist_and_take_handlers(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=3, num_sanity_val_steps=0)
    for name in ("validate_engine", "test_engine", "predict_engine", "train_engine"):
        assert isinstance(getattr(trainer, name), Engine)
    runs, test_iters, preds = [], [], []
    trainer.validate_engine.add_event_handler(Events.COMPLETED, lambda e: runs.append(trainer.global_step))
    trainer.test_engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: test_iters.append(e.state.iteration))
    trainer.predict_engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: preds.append(e.state.output.shape))
    model = LinearModel()
    trainer.fit(model, loader(16), loader(16))
    trainer.test(model, loader(24), verbose=False)
    trainer.predict(model, loader(16))
    assert runs == [2, 4, 6]
    assert test_iters == [1, 2, 3]
    assert preds == [torch.Size([8, 1])] * 2


def test_engines_cannot_be_run_directly(tmp_path):
    trainer = quiet_trainer(tmp_path)
    with pytest.raises(RuntimeError, match="run by the Trainer"):
        trainer.validate_engine.run([1, 2])


def test_trainer_state_dict_has_loop_progress(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(LinearModel(), loader(24))
    state = trainer.state_dict()
    assert state["epoch"] == 2 and state["global_step"] == 6
    assert state["engine"]["iteration"] == 6


# ---------------------------------------------------------------------- seed_everything


def _seeded_fit(tmp_path, seed):
    ember.seed_everything(seed)
    model = LinearModel(lr=0.05)  # initial weights from the seeded generator
    data = DataLoader(loader(64).dataset, batch_size=8, shuffle=True)
    quiet_trainer(tmp_path, max_epochs=2).fit(model, data)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), torch.stack(model.train_losses)


def test_same_seed_gives_identical_results(tmp_path):
    params_a, losses_a = _seeded_fit(tmp_path, 123)
    params_b, losses_b = _seeded_fit(tmp_path, 123)
    params_c, _ = _seeded_fit(tmp_path, 7)
    assert torch.equal(params_a, params_b)
    assert torch.equal(losses_a, losses_b)
    assert not torch.equal(params_a, params_c)


def test_seed_everything_seeds_python_numpy_and_torch():
    assert ember.seed_everything(42) == 42
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ember.seed_everything(42, workers=True)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


@pytest.mark.parametrize("bad", [-1, 2**32, "1", 1.5, True, None])
def test_bad_seed_raises(bad):
    with pytest.raises(ValueError, match="seed") as info:
        ember.seed_everything(bad)
    assert repr(bad) in str(info.value)
