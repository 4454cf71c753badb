"""A classic Ignite training script, written as an Ignite user writes it; only the imports changed:
``from ignite.engine import Engine, Events`` became ``from ember.engine import Engine, Events``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ember.engine import Engine, Events


def make_data(n: int = 128):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    true_w = torch.tensor([[1.5], [-2.0], [0.5], [3.0]])
    y = x @ true_w + 0.7 + 0.01 * torch.randn(n, 1, generator=generator)
    return x, y


def test_ignite_training_script_runs_unchanged():
    torch.manual_seed(0)
    x, y = make_data()
    train_loader = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=True)
    val_loader = DataLoader(TensorDataset(x[96:], y[96:]), batch_size=16)

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    criterion = nn.MSELoss()

    # ---------------------------------------------------------------- the Ignite script
    def train_step(engine, batch):
        model.train()
        optimizer.zero_grad()
        x, y = batch
        y_pred = model(x)
        loss = criterion(y_pred, y)
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(train_step)

    def validation_step(engine, batch):
        model.eval()
        with torch.no_grad():
            x, y = batch
            y_pred = model(x)
            return y_pred, y

    evaluator = Engine(validation_step)

    # a hand-written metric, attached the way Ignite's Metric.attach does it
    @evaluator.on(Events.EPOCH_STARTED)
    def reset(engine):
        engine.state.sum_sq, engine.state.count = 0.0, 0

    @evaluator.on(Events.ITERATION_COMPLETED)
    def update(engine):
        y_pred, y = engine.state.output
        engine.state.sum_sq += ((y_pred - y) ** 2).sum().item()
        engine.state.count += y.shape[0]

    @evaluator.on(Events.EPOCH_COMPLETED)
    def compute(engine):
        engine.state.metrics["mse"] = engine.state.sum_sq / engine.state.count

    log_interval = 3
    training_log = []

    @trainer.on(Events.ITERATION_COMPLETED(every=log_interval))
    def log_training_loss(engine):
        training_log.append((engine.state.epoch, engine.state.iteration, engine.state.output))

    val_history = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def log_validation_results(trainer):
        evaluator.run(val_loader)
        metrics = evaluator.state.metrics
        val_history.append((trainer.state.epoch, metrics["mse"]))

    @trainer.on(Events.STARTED)
    def baseline(trainer):
        evaluator.run(val_loader)
        val_history.append((0, evaluator.state.metrics["mse"]))

    completed = []
    trainer.add_event_handler(Events.COMPLETED, lambda engine: completed.append(engine.state.epoch))

    trainer.run(train_loader, max_epochs=20)
    # ---------------------------------------------------------------- end of the Ignite script

    state = trainer.state
    assert (state.epoch, state.iteration, state.epoch_length, state.max_epochs) == (20, 120, 6, 20)
    assert completed == [20]
    assert [it for _, it, _ in training_log] == list(range(3, 121, 3))
    assert [ep for ep, _, _ in training_log] == [(it - 1) // 6 + 1 for it in range(3, 121, 3)]
    assert all(isinstance(loss, float) for _, _, loss in training_log)
    assert [ep for ep, _ in val_history] == list(range(21))
    # each evaluator.run is a fresh one-epoch run over the 2 validation batches
    assert (evaluator.state.epoch, evaluator.state.iteration, evaluator.state.epoch_length) == (1, 2, 2)
    first_mse, last_mse = val_history[0][1], val_history[-1][1]
    assert last_mse < 0.05 * first_mse
    early_loss = sum(loss for _, _, loss in training_log[:4]) / 4
    late_loss = sum(loss for _, _, loss in training_log[-4:]) / 4
    assert late_loss < 0.1 * early_loss


def test_ignite_early_stopping_idiom_terminates_the_trainer_from_the_evaluator():
    """Ignite's EarlyStopping calls ``trainer.terminate()`` from an evaluator handler."""
    torch.manual_seed(0)
    x, y = make_data(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step(engine, batch):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(train_step)
    evaluator = Engine(lambda engine, batch: nn.functional.mse_loss(model(batch[0]), batch[1]).item())

    @evaluator.on(Events.COMPLETED)
    def stop_when_good(engine):
        if engine.state.output < 0.05:
            trainer.terminate()

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run(loader))
    events = []
    trainer.add_event_handler(Events.TERMINATE | Events.COMPLETED, lambda engine: events.append(engine.last_event_name))

    with torch.no_grad():
        start_loss = nn.functional.mse_loss(model(x), y).item()
    state = trainer.run(loader, max_epochs=100)
    assert events == [Events.TERMINATE, Events.COMPLETED]
    assert state.epoch < 100
    assert state.iteration == state.epoch * 4  # stopped at an epoch boundary
    assert evaluator.state.output < 0.05 < start_loss
