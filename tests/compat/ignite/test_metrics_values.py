"""Differential sweep: Ember's metric values against the real Ignite 0.5.5 on many random inputs.

Binary, multiclass (with and without extra dimensions, with classes absent from the predictions, the
targets or both) and multilabel inputs, split into uneven batches; every ``average=`` mode of
``Precision``/``Recall``, ``Fbeta`` (own and given precision/recall), ``Accuracy``, ``Loss`` (with
``criterion_kwargs``), ``Average``, ``GeometricAverage`` and ``RunningAverage``. The number of cases and
the largest difference seen are printed (``pytest -s``) and bounded.
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional as F

im = pytest.importorskip("ignite.metrics")
ignite_engine = pytest.importorskip("ignite.engine")

import ember.engine as ember_engine  # noqa: E402
import ember.metrics as em  # noqa: E402

CASES_PER_TASK = 150


def _batches(n: int, rng: random.Random) -> list[slice]:
    cuts = sorted(rng.sample(range(1, n), k=min(n - 1, rng.randint(0, 3)))) if n > 1 else []
    edges = [0, *cuts, n]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def classification_case(task: str, seed: int) -> dict[str, Any]:
    """A random classification data set as batches of ``(y_pred, y)`` (what Ignite accepts)."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    n = rng.randint(1, 24)
    extra = (rng.randint(1, 3),) if rng.random() < 0.25 else ()
    if task == "binary":
        y = (torch.rand((n, *extra), generator=g) < rng.choice([0.0, 0.3, 0.7, 1.0])).long()
        y_pred = (torch.rand((n, *extra), generator=g) < rng.choice([0.0, 0.4, 0.6, 1.0])).long()
        if rng.random() < 0.2:  # (N, 1) predictions: binary too
            y_pred = y_pred.unsqueeze(1)
        classes = 2
    elif task == "multiclass":
        classes = rng.randint(2, 6)
        present_y = rng.sample(range(classes), k=rng.randint(1, classes))
        present_p = rng.sample(range(classes), k=rng.randint(1, classes))  # absent classes on either side
        y = torch.tensor(present_y)[torch.randint(len(present_y), (n, *extra), generator=g)]
        scores = torch.randn((n, classes, *extra), generator=g)
        mask = torch.full((classes,), -1e4)
        mask[present_p] = 0.0
        y_pred = scores + mask.view(1, classes, *([1] * len(extra)))
    else:
        classes = rng.randint(2, 5)
        y = (torch.rand((n, classes, *extra), generator=g) < rng.random()).long()
        y_pred = (torch.rand((n, classes, *extra), generator=g) < rng.random()).long()
        if rng.random() < 0.3:
            y[:, rng.randrange(classes)] = 0  # a label absent from the targets
    return {"batches": [(y_pred[s], y[s]) for s in _batches(n, rng)], "classes": classes}


def value(metric: Any, batches: list) -> Any:
    metric.reset()
    for batch in batches:
        metric.update(batch)
    return metric.compute()


def difference(a: Any, b: Any) -> float:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a, b)
    return float((a - b).abs().max()) if a.numel() else 0.0


def classification_pairs(task: str) -> list[tuple[str, Callable[[Any], Any]]]:
    """``(label, make)`` where ``make(lib)`` builds the metric with that library's classes."""
    ml = task == "multilabel"
    pairs = []
    for cls in ("Precision", "Recall"):
        for average in [False, True, "macro", "micro", "weighted", *(["samples"] if ml else [])]:
            pairs.append(
                (f"{cls}({average!r})", lambda lib, c=cls, a=average: getattr(lib, c)(average=a, is_multilabel=ml))
            )
    if not ml:
        for beta in (0.5, 1.0, 2.0):
            for average in (True, False):
                pairs.append((f"Fbeta({beta}, {average})", lambda lib, b=beta, a=average: lib.Fbeta(b, average=a)))
        pairs.append(
            (
                "Fbeta(2, precision=, recall=)",
                lambda lib: lib.Fbeta(2.0, precision=lib.Precision(average=False), recall=lib.Recall(average=False)),
            )
        )
    else:
        pairs.append(
            (
                "Fbeta(1, multilabel)",
                lambda lib: lib.Fbeta(
                    1.0, precision=lib.Precision(average=False, is_multilabel=True),
                    recall=lib.Recall(average=False, is_multilabel=True),
                ),
            )
        )  # fmt: skip
    pairs.append(("Accuracy", lambda lib: lib.Accuracy(is_multilabel=ml)))
    return pairs


STATS: dict[str, list[float]] = {}


def _record(family: str, diff: float) -> None:
    STATS.setdefault(family, []).append(diff)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_classification_metrics_equal_ignite_on_random_inputs(task: str) -> None:
    worst = {"Precision/Recall/Fbeta": 0.0, "Accuracy": 0.0}
    cases = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ignite's dtype warnings
        for seed in range(CASES_PER_TASK):
            case = classification_case(task, seed)
            for label, make in classification_pairs(task):
                ours = value(make(em), case["batches"])
                theirs = value(make(im), case["batches"])
                diff = difference(ours, theirs)
                assert diff <= (1e-6 if label == "Accuracy" else 1e-12), (task, seed, label, ours, theirs)
                if not isinstance(theirs, torch.Tensor):
                    assert not isinstance(ours, torch.Tensor), (label, ours)  # a number where Ignite gives one
                family = "Accuracy" if label == "Accuracy" else "Precision/Recall/Fbeta"
                worst[family] = max(worst[family], diff)
                cases += 1
                _record(task, diff)
    shown = ", ".join(f"{k} {v:.3g}" for k, v in worst.items())
    print(f"\n{task}: {cases} metric values on {CASES_PER_TASK} random data sets, max |ember - ignite|: {shown}")


def test_issue_example_absent_class_macro_average() -> None:
    """The issue's example: one class absent from predictions and targets counts as 0 in the macro mean."""
    y_pred = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    y = torch.tensor([0, 1, 1, 1])
    for lib in (im, em):
        assert value(lib.Precision(average=True), [(y_pred, y)]) == pytest.approx(0.5)
        assert value(lib.Recall(average=True), [(y_pred, y)]) == pytest.approx(5 / 9)


def test_loss_with_criterion_kwargs_equals_ignite() -> None:
    rng = random.Random(0)
    worst, cases = 0.0, 0
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        classes = rng.randint(2, 5)
        n = rng.randint(1, 20)
        y_pred, y = torch.randn(n, classes, generator=g), torch.randint(classes, (n,), generator=g)
        kwargs = {"weight": torch.rand(classes, generator=g) + 0.1, "label_smoothing": rng.choice([0.0, 0.1])}
        batches = [{"y_pred": y_pred[s], "y": y[s], "criterion_kwargs": kwargs} for s in _batches(n, rng)]
        results = []
        for lib, engine_mod in ((em, ember_engine), (im, ignite_engine)):
            engine = engine_mod.Engine(lambda e, b: b)
            lib.Loss(F.cross_entropy).attach(engine, "loss")
            engine.run(batches, max_epochs=1)
            results.append(engine.state.metrics["loss"])
        assert isinstance(results[0], float)
        diff = abs(results[0] - results[1])
        assert diff <= 1e-5 * max(1.0, abs(results[1])), (seed, results)
        worst, cases = max(worst, diff), cases + 1
        _record("loss", diff)
    print(f"\nLoss(criterion_kwargs): {cases} random cases, max |ember - ignite| = {worst:.3g}")


def _accumulation_outputs(kind: str, rng: random.Random, g: torch.Generator) -> list[Any]:
    n = rng.randint(1, 6)
    if kind == "numbers":
        return [rng.uniform(0.1, 5.0) for _ in range(n)]
    if kind == "0-d":
        return [torch.rand((), generator=g) + 0.1 for _ in range(n)]
    if kind == "1-d":
        return [torch.rand(3, generator=g) + 0.1 for _ in range(n)]  # one example each: element-wise means
    return [torch.rand(rng.randint(1, 4), 3, generator=g) + 0.1 for _ in range(n)]  # batches of rows


@pytest.mark.parametrize("kind", ["numbers", "0-d", "1-d", "2-d"])
@pytest.mark.parametrize("name", ["Average", "GeometricAverage"])
def test_average_and_geometric_average_equal_ignite(name: str, kind: str) -> None:
    rng = random.Random(hash((name, kind)) % 1000)
    worst = 0.0
    for seed in range(40):
        outputs = _accumulation_outputs(kind, rng, torch.Generator().manual_seed(seed))
        results = []
        for lib, engine_mod in ((em, ember_engine), (im, ignite_engine)):
            engine = engine_mod.Engine(lambda e, b: b)
            getattr(lib, name)().attach(engine, "avg")
            engine.run(outputs, max_epochs=1)
            results.append(engine.state.metrics["avg"])
        ours, theirs = results
        assert type(ours) is type(theirs) or (isinstance(ours, float) and isinstance(theirs, float)), results
        diff = difference(ours, theirs)
        assert diff <= 1e-6, (seed, results)
        worst = max(worst, diff)
        _record("accumulation", diff)
    print(f"\n{name} of {kind}: 40 random cases, max |ember - ignite| = {worst:.3g}")


@pytest.mark.parametrize("usage", ["running_batch_wise", "single_epoch_running_batch_wise"])
def test_running_average_of_outputs_equals_ignite(usage: str) -> None:
    rng = random.Random(len(usage))
    worst = 0.0
    for seed in range(30):
        alpha = rng.choice([0.98, 0.5, 0.1, 1.0])
        values = [rng.uniform(-3, 3) for _ in range(rng.randint(2, 6))]
        as_tensor = seed % 2 == 0
        seen = {}
        for label, lib, engine_mod in (("ember", em, ember_engine), ("ignite", im, ignite_engine)):
            engine = engine_mod.Engine(lambda e, b, t=as_tensor: torch.tensor(b) if t else b)
            lib.RunningAverage(output_transform=lambda x: x, alpha=alpha).attach(engine, "ra", usage=usage)
            trace: list = []
            engine.add_event_handler(
                engine_mod.Events.ITERATION_COMPLETED, lambda e, t=trace: t.append(e.state.metrics["ra"])
            )
            engine.run(values, max_epochs=2)
            seen[label] = trace
        assert all(isinstance(v, float) for v in seen["ember"])  # a number, as Ignite stores it
        diff = max(abs(a - b) for a, b in zip(seen["ember"], seen["ignite"]))
        assert len(seen["ember"]) == len(seen["ignite"]) and diff <= 1e-6, (seed, seen)
        worst = max(worst, diff)
        _record("running_average", diff)
    print(f"\nRunningAverage(output, {usage}): 30 random cases, max |ember - ignite| = {worst:.3g}")


@pytest.mark.parametrize("src", ["Accuracy", "Precision", "Loss"])
@pytest.mark.parametrize("usage", ["running_batch_wise", "running_epoch_wise", "single_epoch_running_batch_wise"])
def test_running_average_of_a_metric_equals_ignite(src: str, usage: str) -> None:
    worst = 0.0
    for seed in range(12):
        case = classification_case("multiclass", 1000 + seed)
        batches = case["batches"] * 2
        seen = {}
        for label, lib, engine_mod in (("ember", em, ember_engine), ("ignite", im, ignite_engine)):
            metric = {
                "Accuracy": lambda lib=lib: lib.Accuracy(),
                "Precision": lambda lib=lib: lib.Precision(average=True),
                "Loss": lambda lib=lib: lib.Loss(F.cross_entropy),
            }[src]()
            engine = engine_mod.Engine(lambda e, b: b)
            lib.RunningAverage(metric, alpha=0.7).attach(engine, "ra", usage=usage)
            trace: list = []
            event = (
                engine_mod.Events.EPOCH_COMPLETED
                if usage == "running_epoch_wise"
                else engine_mod.Events.ITERATION_COMPLETED
            )
            engine.add_event_handler(event, lambda e, t=trace: t.append(e.state.metrics["ra"]))
            engine.run(batches, max_epochs=2)
            seen[label] = trace
        # relative: Ignite sums Loss in float32, Ember in float64
        diff = max(difference(a, b) / max(1.0, abs(b)) for a, b in zip(seen["ember"], seen["ignite"]))
        assert len(seen["ember"]) == len(seen["ignite"]) and diff <= 1e-6, (seed, seen)
        worst = max(worst, diff)
        _record("running_average", diff)
    assert not math.isnan(worst)
