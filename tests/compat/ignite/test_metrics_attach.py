"""Differential tests: attaching metrics on the real Ignite 0.5.5 and on Ember — every ``MetricUsage``,
``attach``/``detach``/``is_attached``, dict outputs, per-sample lists, dict results and a custom metric
written against Ignite's base class — comparing what a handler reads from ``engine.state.metrics`` at
every event of the run.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

im = pytest.importorskip("ignite.metrics")
ignite_metric_module = pytest.importorskip("ignite.metrics.metric")
ignite_engine = pytest.importorskip("ignite.engine")

from ignite.exceptions import NotComputableError as IgniteNotComputableError  # noqa: E402

import ember.engine as ember_engine  # noqa: E402
import ember.metrics as em  # noqa: E402
import ember.metrics.metric as ember_metric_module  # noqa: E402

LIBS = {"ignite": (ignite_engine, im), "ember": (ember_engine, em)}
USAGES = ["EpochWise", "BatchWise", "RunningBatchWise", "RunningEpochWise", "SingleEpochRunningBatchWise"]
EVENTS = ["EPOCH_STARTED", "ITERATION_COMPLETED", "EPOCH_COMPLETED", "COMPLETED"]


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, generator=g), torch.randint(3, (n,), generator=g)) for n in (4, 2, 5, 3)]


def trace(lib: str, make_metric: Any, usage: Any, epochs: int = 2, data: Any = None, name: str = "m") -> list:
    """Run an engine with the metric attached; read ``state.metrics`` at every event, after the metric."""
    engine_mod, metrics_mod = LIBS[lib]
    engine = engine_mod.Engine(lambda e, b: b)
    metric = make_metric(metrics_mod)
    metric.attach(engine, name, usage=usage(metrics_mod) if callable(usage) else usage)
    seen: list = []
    for event in EVENTS:
        engine.add_event_handler(
            getattr(engine_mod.Events, event),
            lambda e, ev=event: seen.append((ev, e.state.epoch, e.state.iteration, _plain(e.state.metrics.get(name)))),
        )
    engine.run(data if data is not None else batches(), max_epochs=epochs)
    return seen


def _plain(v: Any) -> Any:
    return [float(x) for x in v.flatten()] if isinstance(v, torch.Tensor) else v


def assert_same(ours: Any, theirs: Any) -> None:
    """Equal, numbers to 1e-6 relative: Accuracy (torchmetrics) and Loss add in float32 where Ignite uses
    float64, or the other way round."""
    if isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9), (ours, theirs)
    else:
        assert ours == theirs


@pytest.mark.parametrize("usage", USAGES)
@pytest.mark.parametrize("metric", ["Accuracy", "Precision(False)", "Fbeta(1)", "Loss"])
def test_every_usage_object_matches_ignite(usage: str, metric: str) -> None:
    makers = {
        "Accuracy": lambda m: m.Accuracy(),
        "Precision(False)": lambda m: m.Precision(average=False),
        "Fbeta(1)": lambda m: m.Fbeta(1.0),
        "Loss": lambda m: m.Loss(torch.nn.functional.cross_entropy),
    }
    got = {}
    for lib in LIBS:
        usage_obj = getattr(ignite_metric_module if lib == "ignite" else em, usage)()
        got[lib] = trace(lib, makers[metric], usage_obj)
    assert_same(got["ember"], got["ignite"])


@pytest.mark.parametrize("name", ["epoch_wise", "batch_wise", "running_batch_wise", "running_epoch_wise",
                                  "single_epoch_running_batch_wise"])  # fmt: skip
def test_usage_names_match_ignite(name: str) -> None:
    got = {lib: trace(lib, lambda m: m.Average(output_transform=lambda b: b[0].mean(dim=0)), name) for lib in LIBS}
    assert_same(got["ember"], got["ignite"])


def test_batch_filtered_usage_matches_ignite() -> None:
    got = {}
    for lib in LIBS:
        usage = (ignite_metric_module if lib == "ignite" else em).BatchFiltered(every=2)
        got[lib] = trace(lib, lambda m: m.Accuracy(), usage)
    assert_same(got["ember"], got["ignite"])


@pytest.mark.parametrize("usage", ["running_batch_wise", "single_epoch_running_batch_wise", "running_epoch_wise"])
def test_running_average_with_a_metric_and_an_output_matches_ignite(usage: str) -> None:
    for make in (
        lambda m: m.RunningAverage(m.Accuracy(), alpha=0.6),
        lambda m: m.RunningAverage(output_transform=lambda b: b[0].abs().mean(), alpha=0.3),
    ):
        got = {lib: trace(lib, make, usage, epochs=3) for lib in LIBS}
        assert_same(got["ember"], got["ignite"])


def test_dict_outputs_and_per_sample_lists_match_ignite() -> None:
    data = batches()
    as_dicts = [{"y_pred": p, "y": y, "other": 1} for p, y in data]
    as_lists = [([p[i] for i in range(len(p))], [y[i] for i in range(len(y))]) for p, y in data]
    with_numbers = [([p[i] for i in range(len(p))], [int(y[i]) for i in range(len(y))]) for p, y in data]
    for inputs in (as_dicts, as_lists, with_numbers):
        for make in (lambda m: m.Accuracy(), lambda m: m.Precision(average="weighted"), lambda m: m.Recall()):
            got = {lib: trace(lib, make, "epoch_wise", data=inputs) for lib in LIBS}
            assert_same(got["ember"], got["ignite"])
    for engine_mod, metrics_mod in LIBS.values():  # a dict without y_pred/y is an error in both
        engine = engine_mod.Engine(lambda e, b: {"logits": b[0], "labels": b[1]})
        metrics_mod.Accuracy().attach(engine, "acc")
        with pytest.raises(ValueError):
            engine.run(data, max_epochs=1)


def test_attach_detach_is_attached_match_ignite() -> None:
    observed = {}
    for lib, (engine_mod, metrics_mod) in LIBS.items():
        engine = engine_mod.Engine(lambda e, b: b)
        acc = metrics_mod.Accuracy()
        acc.attach(engine, "acc")
        acc.attach(engine, "acc_again")  # one reset/update, two results
        batch_usage = (ignite_metric_module if lib == "ignite" else em).BatchWise()
        states = [acc.is_attached(engine), acc.is_attached(engine, usage="batch_wise")]
        engine.run(batches(), max_epochs=1)
        first = dict(engine.state.metrics)
        acc.detach(engine)
        states += [acc.is_attached(engine), acc.is_attached(engine, usage=batch_usage)]
        engine.state.metrics.clear()
        engine.state.max_epochs = None
        engine.run(batches(), max_epochs=1)
        observed[lib] = (states, {k: round(v, 6) for k, v in first.items()}, dict(engine.state.metrics))
        with pytest.raises(ValueError):
            acc.attach(engine, "acc", usage="per_batch")
    assert observed["ember"] == observed["ignite"]
    assert observed["ember"][0] == [True, False, False, False]


@pytest.mark.parametrize("mode", ["flatten", "named", "both"])
def test_dict_results_follow_metrics_result_mode(mode: str) -> None:
    observed = {}
    for lib, (engine_mod, metrics_mod) in LIBS.items():
        base = metrics_mod.Metric

        class Stats(base):  # written as for Ignite
            required_output_keys = None

            def __init__(self) -> None:
                super().__init__(lambda out: out[1].float(), metrics_result_mode=mode)

            def reset(self) -> None:
                self.total, self.n = 0.0, 0

            def update(self, output: Any) -> None:
                self.total += float(output.sum())
                self.n += len(output)

            def compute(self) -> dict[str, float]:
                return {"mean": self.total / self.n, "count": float(self.n)}

        engine = engine_mod.Engine(lambda e, b: b)
        Stats().attach(engine, "stats")
        engine.run(batches(), max_epochs=1)
        observed[lib] = dict(engine.state.metrics)
    assert observed["ember"] == observed["ignite"]


def test_a_custom_metric_written_for_ignite_ports_by_changing_imports() -> None:
    """Ignite's custom-metric recipe: ``reinit__is_reduced``, ``sync_all_reduce``, ``NotComputableError``."""
    observed = {}
    for lib, module in (("ignite", ignite_metric_module), ("ember", ember_metric_module)):
        Metric, reinit, sync = module.Metric, module.reinit__is_reduced, module.sync_all_reduce
        not_computable = IgniteNotComputableError if lib == "ignite" else em.NotComputableError

        class CustomAccuracy(Metric):
            error = not_computable

            def __init__(self, output_transform: Any = lambda x: x, device: Any = "cpu") -> None:
                self._num_correct = None
                self._num_examples = None
                super().__init__(output_transform=output_transform, device=device)

            @reinit
            def reset(self) -> None:
                self._num_correct = torch.tensor(0, device=self._device)
                self._num_examples = 0
                super().reset()

            @reinit
            def update(self, output: Any) -> None:
                y_pred, y = output[0].detach(), output[1].detach()
                correct = torch.eq(y_pred.argmax(dim=1), y).view(-1)
                self._num_correct += torch.sum(correct).to(self._device)
                self._num_examples += correct.shape[0]

            @sync("_num_examples", "_num_correct:SUM")
            def compute(self) -> float:
                if self._num_examples == 0:
                    raise self.error("CustomAccuracy must have at least one example before it can be computed.")
                return self._num_correct.item() / self._num_examples

        with pytest.raises(not_computable):
            CustomAccuracy().compute()
        observed[lib] = trace(lib, lambda m, cls=CustomAccuracy: cls(), "epoch_wise")
    assert observed["ember"] == observed["ignite"]


# ---------------------------------------------------------------------- deliberate differences (pinned)


def test_difference_metrics_compute_before_handlers_added_earlier() -> None:
    """Ember runs metric handlers first (``Priority.METRICS``): a handler added before the metric
    already reads this epoch's value; Ignite runs handlers in the order they were added."""
    seen = {}
    for lib, (engine_mod, metrics_mod) in LIBS.items():
        engine = engine_mod.Engine(lambda e, b: b)
        values: list = []
        engine.add_event_handler(
            engine_mod.Events.EPOCH_COMPLETED, lambda e, v=values: v.append(e.state.metrics.get("acc"))
        )
        metrics_mod.Accuracy().attach(engine, "acc")
        engine.run(batches(), max_epochs=1)
        seen[lib] = values
    assert seen["ignite"] == [None]
    assert seen["ember"] == [pytest.approx(trace("ignite", lambda m: m.Accuracy(), "epoch_wise", 1, name="acc")[-1][3])]


def test_difference_running_average_of_a_metric_with_dict_outputs() -> None:
    """Ignite's RunningAverage(src) reads the engine output itself and raises on a dict; Ember takes the
    value from src only."""
    data = [{"y_pred": p, "y": y} for p, y in batches()]
    results = {}
    for lib, (engine_mod, metrics_mod) in LIBS.items():
        engine = engine_mod.Engine(lambda e, b: b)
        metrics_mod.RunningAverage(metrics_mod.Accuracy(), alpha=0.5).attach(engine, "ra")
        try:
            engine.run(data, max_epochs=1)
            results[lib] = engine.state.metrics["ra"]
        except TypeError as err:
            results[lib] = type(err)
    assert results["ignite"] is TypeError
    assert isinstance(results["ember"], float)


def test_difference_binary_probabilities_and_logits_are_accepted() -> None:
    """Ignite's binary metrics take only 0/1 predictions; Ember also thresholds probabilities (> 0.5)
    and logits (after a sigmoid), with the same values as for the thresholded labels."""
    y = torch.tensor([1, 0, 1, 1, 0, 0])
    probabilities = torch.tensor([0.9, 0.2, 0.4, 0.7, 0.6, 0.1])
    labels = (probabilities > 0.5).long()
    with pytest.raises(ValueError):
        im.Precision().update((probabilities, y))
    for p in (probabilities, torch.logit(probabilities)):
        ours = em.Precision(average=True)
        ours.update((p, y))
        theirs = im.Precision(average=True)
        theirs.update((labels, y))
        assert ours.compute() == pytest.approx(theirs.compute())


def test_difference_fbeta_micro_and_weighted_are_real_averages() -> None:
    """Ignite's Fbeta treats any true ``average`` as the macro mean; Ember computes "micro" (from the
    summed counts) and "weighted" (by support)."""
    y_pred = torch.eye(3)[[0, 1, 2, 0, 1, 2, 2, 1]] * 3.0
    y = torch.tensor([0, 1, 1, 2, 1, 2, 2, 0])
    theirs_micro = im.Fbeta(1.0, average="micro")
    theirs_micro.update((y_pred, y))
    theirs_macro = im.Fbeta(1.0, average=True)
    theirs_macro.update((y_pred, y))
    assert theirs_micro.compute() == theirs_macro.compute()
    ours = em.Fbeta(1.0, average="micro")
    ours.update((y_pred, y))
    assert ours.compute() == pytest.approx(5 / 8)  # micro F1 = accuracy for single-label multiclass
