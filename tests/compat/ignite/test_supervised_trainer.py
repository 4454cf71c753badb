"""Differential tests: ``create_supervised_trainer`` / ``create_supervised_evaluator`` and the
``supervised_*_step`` helpers on the real Ignite 0.5.5 and on Ember, from the same initial weights and
data: the outputs of every iteration, the final weights and optimizer state, the metrics, and the
argument checks (``amp_mode``, ``scaler``, ``gradient_accumulation_steps``, devices)."""

from __future__ import annotations

import warnings
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

ignite_engine = pytest.importorskip("ignite.engine")
ignite_metrics = pytest.importorskip("ignite.metrics")

import ember.engine as ember_engine  # noqa: E402
import ember.metrics as ember_metrics  # noqa: E402

LIBS = {"ignite": (ignite_engine, ignite_metrics), "ember": (ember_engine, ember_metrics)}
HELPERS = [
    "create_supervised_trainer",
    "create_supervised_evaluator",
    "supervised_training_step",
    "supervised_training_step_amp",
    "supervised_training_step_apex",
    "supervised_training_step_tpu",
    "supervised_evaluation_step",
    "supervised_evaluation_step_amp",
]


def data(n_batches: int = 6, batch: int = 5, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 4, generator=g), torch.randint(3, (batch,), generator=g)) for _ in range(n_batches)]


class TwoHeads(nn.Module):
    """A model whose output is a dict: ``model_transform`` picks the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.body(x))
        return {"logits": self.head(h), "features": h}


def setup(seed: int = 0, optimizer: str = "sgd") -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = TwoHeads()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt


def train(lib: str, epochs: int = 2, optimizer: str = "sgd", **kwargs: Any) -> dict[str, Any]:
    engine_mod, _ = LIBS[lib]
    model, opt = setup(optimizer=optimizer)
    kwargs.setdefault("model_transform", lambda out: out["logits"])
    outputs: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast/GradScaler without CUDA
        trainer = engine_mod.create_supervised_trainer(model, opt, F.cross_entropy, **kwargs)
        trainer.add_event_handler(engine_mod.Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
        trainer.run(data(), max_epochs=epochs)
    return {"model": model, "opt": opt, "outputs": outputs, "trainer": trainer}


def assert_same_training(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert len(a["outputs"]) == len(b["outputs"])
    for x, y in zip(a["outputs"], b["outputs"]):
        if isinstance(y, float):
            assert isinstance(x, float) and x == y
        else:
            assert type(x) is type(y) and len(x) == len(y)
    for (name, p), (_, q) in zip(a["model"].state_dict().items(), b["model"].state_dict().items()):
        assert torch.equal(p, q), name  # bitwise: the same arithmetic in the same order
    sa, sb = a["opt"].state_dict()["state"], b["opt"].state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for key in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][key]), torch.as_tensor(sb[k][key])), (k, key)


def test_ember_engine_exports_ignites_supervised_helpers() -> None:
    for name in HELPERS:
        assert callable(getattr(ember_engine, name)), name
        assert name in ember_engine.__all__


@pytest.mark.parametrize("accumulation", [1, 2, 3])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_matches_ignite_bitwise(accumulation: int, optimizer: str) -> None:
    runs = {lib: train(lib, optimizer=optimizer, gradient_accumulation_steps=accumulation) for lib in LIBS}
    assert_same_training(runs["ember"], runs["ignite"])
    assert all(isinstance(o, float) for o in runs["ember"]["outputs"])  # loss.item() by default


def test_prepare_batch_output_transform_model_fn_device_and_non_blocking() -> None:
    Batch = namedtuple("Batch", ["x", "y"])
    seen: dict[str, list] = {"ignite": [], "ember": []}

    def run(lib: str) -> dict[str, Any]:
        def prepare(batch: Any, device: Any = None, non_blocking: bool = False) -> tuple:
            seen[lib].append((device, non_blocking))
            return batch[0] * 2.0, batch[1]

        return train(
            lib, device="cpu", non_blocking=True, prepare_batch=prepare,
            output_transform=lambda x, y, y_pred, loss: (y_pred.argmax(1), loss.detach()),
            model_fn=lambda model, x: model(x + 1.0),
        )  # fmt: skip

    runs = {lib: run(lib) for lib in LIBS}
    assert_same_training(runs["ember"], runs["ignite"])
    assert seen["ember"] == seen["ignite"] == [("cpu", True)] * 12
    for x, y in zip(runs["ember"]["outputs"], runs["ignite"]["outputs"]):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    # the default prepare_batch moves nested tensors (named tuples, dicts) to the device
    for engine_mod, _ in LIBS.values():
        model = nn.Linear(4, 3)
        step = engine_mod.supervised_evaluation_step(model, device="cpu", model_fn=lambda m, x: m(x["inp"]))
        out = step(engine_mod.Engine(lambda e, b: None), Batch({"inp": torch.ones(2, 4)}, torch.zeros(2)))
        assert out[0].shape == (2, 3) and torch.equal(out[1], torch.zeros(2))


@pytest.mark.parametrize("scaler", [False, True])
def test_amp_mode_without_cuda_trains_as_ignite(scaler: bool) -> None:
    runs = {lib: train(lib, amp_mode="amp", scaler=scaler) for lib in LIBS}
    assert_same_training(runs["ember"], runs["ignite"])
    states = {lib: getattr(r["trainer"].state, "scaler", None) for lib, r in runs.items()}
    if scaler:
        assert type(states["ember"]) is type(states["ignite"]) is torch.amp.GradScaler
    else:
        assert states == {"ignite": None, "ember": None}


def test_a_given_scaler_is_used_and_not_stored() -> None:
    for lib in LIBS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            given = torch.amp.GradScaler(enabled=False)
        run = train(lib, amp_mode="amp", scaler=given)
        assert not hasattr(run["trainer"].state, "scaler")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"scaler": True}, ValueError),  # a scaler needs amp_mode="amp"
        ({"amp_mode": "apex", "scaler": True}, ValueError),
        ({"device": "mps", "amp_mode": "amp"}, ValueError),
        ({"device": "xla"}, RuntimeError),  # no torch_xla here
        ({"gradient_accumulation_steps": 0}, ValueError),
        ({"gradient_accumulation_steps": -2}, ValueError),
        ({"amp_mode": "apex"}, ModuleNotFoundError),  # no apex here
    ],
)
def test_argument_errors_match_ignite(kwargs: dict[str, Any], error: type) -> None:
    for engine_mod, _ in LIBS.values():
        model, opt = setup()
        with pytest.raises(error):
            engine_mod.create_supervised_trainer(model, opt, F.cross_entropy, **kwargs)


def test_deterministic_gives_a_deterministic_engine_that_trains_as_ignites() -> None:
    from ember.engine.deterministic import DeterministicEngine

    runs = {lib: train(lib, deterministic=True) for lib in LIBS}
    assert isinstance(runs["ember"]["trainer"], DeterministicEngine)
    assert isinstance(runs["ignite"]["trainer"], ignite_engine.DeterministicEngine)
    assert_same_training(runs["ember"], runs["ignite"])
    model, opt = setup()
    assert type(ember_engine.create_supervised_trainer(model, opt, F.cross_entropy)) is ember_engine.Engine


def test_training_step_helpers_on_a_plain_engine() -> None:
    runs = {}
    for lib, (engine_mod, _) in LIBS.items():
        model, opt = setup()
        step = engine_mod.supervised_training_step(
            model, opt, F.cross_entropy, model_transform=lambda out: out["logits"], gradient_accumulation_steps=2
        )
        engine = engine_mod.Engine(step)
        outputs: list = []
        engine.add_event_handler(engine_mod.Events.ITERATION_COMPLETED, lambda e, o=outputs: o.append(e.state.output))
        engine.run(data(), max_epochs=1)
        runs[lib] = {"model": model, "opt": opt, "outputs": outputs}
    assert_same_training(runs["ember"], runs["ignite"])


@pytest.mark.parametrize("amp_mode", [None, "amp"])
def test_evaluator_matches_ignite(amp_mode: str | None) -> None:
    observed = {}
    for lib, (engine_mod, metrics_mod) in LIBS.items():
        model, _ = setup(seed=3)
        metrics = {
            "accuracy": metrics_mod.Accuracy(),
            "nll": metrics_mod.Loss(F.cross_entropy),
            "precision": metrics_mod.Precision(average=False),
            "f2": metrics_mod.Fbeta(2.0),
        }
        evaluator = engine_mod.create_supervised_evaluator(
            model, metrics=metrics, device="cpu", model_transform=lambda out: out["logits"], amp_mode=amp_mode
        )
        outputs: list = []
        evaluator.add_event_handler(
            engine_mod.Events.ITERATION_COMPLETED, lambda e, o=outputs: o.append(e.state.output)
        )
        model.train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator.run(data(seed=7), max_epochs=1)
        assert not model.training  # eval mode, as Ignite
        m = evaluator.state.metrics
        observed[lib] = (
            {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in m.items()},
            [(p.tolist(), y.tolist()) for p, y in outputs],
        )
    (ours, our_out), (theirs, their_out) = observed["ember"], observed["ignite"]
    assert our_out == their_out  # (y_pred, y), under no_grad
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert ours[k] == pytest.approx(theirs[k], rel=1e-6), k


def test_evaluator_output_transform_and_no_grad() -> None:
    for engine_mod, _ in LIBS.values():
        model = nn.Linear(4, 3)
        evaluator = engine_mod.create_supervised_evaluator(
            model, output_transform=lambda x, y, y_pred: {"x": x, "y": y, "y_pred": y_pred}
        )
        evaluator.run(data(n_batches=1), max_epochs=1)
        out = evaluator.state.output
        assert set(out) == {"x", "y", "y_pred"} and not out["y_pred"].requires_grad
