"""The learning-rate finder: the sweep, the divergence stop, the suggestion, the plot, and an exact
restore of the model, its optimizer and the random state."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ember
from ember.tune import LRFinder, Tuner, lr_find
from helpers import LinearModel, loader, quiet_trainer


class Net(ember.Module):
    """BatchNorm (buffers), Dropout (random state) and an Adam optimizer kept across fits."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.opt: torch.optim.Optimizer | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.body(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        if self.opt is None:
            self.opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return self.opt


def _state(model: Net) -> dict:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "optimizer": copy.deepcopy(model.opt.state_dict()),
        "modes": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(before: dict, model: Net) -> None:
    after = _state(model)
    for k, v in before["tensors"].items():
        assert torch.equal(v, after["tensors"][k]), k
    for k, g in before["grads"].items():
        assert (g is None and after["grads"][k] is None) or torch.equal(g, after["grads"][k]), k
    opt_before, opt_after = before["optimizer"], after["optimizer"]
    assert opt_before["param_groups"] == opt_after["param_groups"]
    assert opt_before["state"].keys() == opt_after["state"].keys()
    for i, state in opt_before["state"].items():
        for k, v in state.items():
            assert torch.equal(v, opt_after["state"][i][k]), (i, k)
    assert before["modes"] == after["modes"]
    assert torch.equal(before["rng"], after["rng"])


def test_restores_weights_buffers_grads_modes_optimizer_and_rng_exactly(tmp_path):
    torch.manual_seed(0)
    model = Net()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader(shuffle=True))  # the optimizer now has Adam state
    model.body[1].eval()  # mixed modes
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = _state(model)
    finder = lr_find(trainer, model, train_dataloaders=loader(shuffle=True), min_lr=1e-4, max_lr=10.0, num_training=40)
    assert len(finder.results["lr"]) >= 10  # the sweep really trained
    _assert_same(before, model)
    assert model.trainer is trainer and trainer.optimizers[0] is model.opt


def test_fit_after_lr_find_equals_fit_without_it(tmp_path):
    torch.manual_seed(0)
    plain = Net()
    swept = copy.deepcopy(plain)
    torch.manual_seed(1)
    quiet_trainer(tmp_path, max_epochs=2).fit(plain, loader(shuffle=True))
    torch.manual_seed(1)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    lr_find(trainer, swept, train_dataloaders=loader(shuffle=True), num_training=20)
    trainer.fit(swept, loader(shuffle=True))
    for (name, a), b in zip(plain.state_dict().items(), swept.state_dict().values()):
        assert torch.equal(a, b), name


def test_exponential_sweep_stops_on_divergence_and_suggests_a_sensible_lr(tmp_path):
    torch.manual_seed(0)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    finder = lr_find(
        trainer,
        LinearModel(),
        train_dataloaders=loader(n=512, batch_size=32, shuffle=True),
        min_lr=1e-5,
        max_lr=100.0,
        num_training=100,
    )
    lrs, losses = finder.results["lr"], finder.results["loss"]
    assert finder.stopped_early and len(lrs) < 100  # SGD diverges long before lr=100
    assert lrs[0] == pytest.approx(1e-5) and all(
        b / a == pytest.approx(lrs[1] / lrs[0]) for a, b in itertools.pairwise(lrs)
    )
    raw = finder.results["raw_loss"]
    assert len(losses) == len(raw) == len(lrs)
    assert not math.isfinite(raw[-1]) or raw[-1] > 4.0 * min(raw)
    suggestion = finder.suggestion()
    # SGD on this problem diverges above lr=1; the loss falls fastest one to two decades below
    assert 3e-3 < suggestion < 0.5
    assert suggestion in lrs


def test_linear_mode_and_no_early_stop(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    finder = lr_find(
        trainer,
        LinearModel(),
        train_dataloaders=loader(),
        min_lr=0.01,
        max_lr=0.1,
        num_training=12,
        mode="linear",
        early_stop_threshold=None,
    )
    assert finder.results["lr"] == pytest.approx(
        [0.01 + 0.09 * i / 11 for i in range(12)]
    )  # 8 batches per epoch: 2 epochs
    assert not finder.stopped_early


def test_gradient_accumulation_records_one_point_per_optimizer_step(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2)
    finder = lr_find(
        trainer, LinearModel(), train_dataloaders=loader(n=64, batch_size=4), num_training=6, early_stop_threshold=None
    )
    assert len(finder.results["lr"]) == len(finder.results["loss"]) == 6


def test_plot_writes_a_png(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    finder = lr_find(
        trainer, LinearModel(), train_dataloaders=loader(n=256, shuffle=True), min_lr=1e-4, max_lr=10.0, num_training=40
    )
    assert list(tmp_path.iterdir()) == []  # the sweep wrote nothing: no logs, no checkpoints
    fig = finder.plot(tmp_path / "plots" / "lr.png")
    assert (tmp_path / "plots" / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes[0].get_xscale() == "log"


def test_too_few_points_gives_no_suggestion_with_a_warning():
    finder = LRFinder("exponential", 1e-3, 1.0, 5)
    finder.results = {"lr": [1e-3, 1e-2, 1e-1], "loss": [1.0, 0.9, 0.5], "raw_loss": [1.0, 0.9, 0.5]}
    with pytest.warns(UserWarning, match="no suggestion"):
        assert finder.suggestion() is None
    assert finder.suggestion(skip_begin=0, skip_end=0) == 1e-1


def test_tuner_sets_the_suggestion_on_the_model(tmp_path):
    model = LinearModel(lr=0.123)
    finder = Tuner(quiet_trainer(tmp_path, max_epochs=1)).lr_find(
        model, train_dataloaders=loader(n=256, shuffle=True), min_lr=1e-4, max_lr=10.0, num_training=40
    )
    assert model.lr == finder.suggestion() != 0.123
    net = Net(lr=0.5)
    finder = Tuner(quiet_trainer(tmp_path, max_epochs=1)).lr_find(
        net, train_dataloaders=loader(n=256, shuffle=True), num_training=30, min_lr=1e-4
    )
    assert net.hparams.lr == finder.suggestion()


def test_update_attr_without_an_lr_attribute_is_a_clear_error(tmp_path):
    class NoLR(LinearModel):
        def __init__(self):
            super().__init__()
            del self.lr

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(AttributeError, match="has no 'lr' or 'learning_rate' attribute or hparams entry"):
        Tuner(quiet_trainer(tmp_path, max_epochs=1)).lr_find(NoLR(), train_dataloaders=loader(n=256), num_training=30)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr=1.0 must be below max_lr=0.1"),
        ({"min_lr": 0}, "min_lr=0 must be a positive number"),
        ({"num_training": 1}, "num_training=1 must be an integer >= 2"),
        ({"mode": "cosine"}, "mode='cosine'; choose 'exponential' or 'linear'"),
        ({"early_stop_threshold": 0.5}, "early_stop_threshold=0.5 must be a number > 1"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as info:
        lr_find(quiet_trainer(tmp_path), LinearModel(), train_dataloaders=loader(), **kwargs)
    assert message in str(info.value)


def test_needs_an_ember_trainer_and_one_optimizer(tmp_path):
    with pytest.raises(TypeError, match=r"trainer must be an ember\.Trainer"):
        lr_find(object(), LinearModel())

    class TwoOptimizers(LinearModel):
        automatic_optimization = False

        def training_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.SGD(self.parameters(), lr=0.1)]

    model = TwoOptimizers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"needs configure_optimizers\(\) to return one optimizer, got 2"):
        lr_find(quiet_trainer(tmp_path), model, train_dataloaders=loader())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "configure_optimizers" not in vars(model)
