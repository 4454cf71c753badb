"""``self.log`` options and values, Lightning against Ember: torchmetrics objects and ``log_dict``,
batch-size weighting (given, inferred from tensor, dict and list batches, an uneven last batch),
``prog_bar``/``logger``/``enable_graph``/``rank_zero_only``, every ``reduce_fx``, every kind of number,
one name from two hooks, and the results of ``validate()``/``test()`` with several loaders. Where
Ember deliberately differs, the test pins the difference."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torchmetrics
from lightning_kit import BOTH, EMBER, LIGHTNING, data
from logging_kit import TRAIN, assert_same, both, mse, observe, scenario, train_step_logging, val_step_logging
from torch.utils.data import DataLoader, Dataset


def kinds(module: Any, i: int) -> dict[str, Any]:
    """Numbers of every kind, tensors that are not float32 and a parameter the optimizer changes in place."""
    return {
        "int": i, "bool": i % 2 == 0, "np_float": np.float32(i) + 0.5, "np_int": np.int64(i),
        "int_tensor": torch.tensor(i), "half": torch.tensor(0.5).half(),
        "double": torch.tensor(i / 3, dtype=torch.float64), "param": module.scale,
    }  # fmt: skip


def kinds_step(self: Any, batch: Any, batch_idx: int) -> torch.Tensor:
    self.log_dict(kinds(self, batch_idx), on_step=True, on_epoch=True)
    return mse(self, batch) * self.scale  # the parameter is trained: it changes after each log


FIT_VALIDATE_TEST = ("fit", "validate", "test")

SCENARIOS: dict[str, tuple[Any, dict]] = {
    # torchmetrics: forward() per step, compute() at epoch end, reset between epochs
    "metric-forward-step-and-epoch": (
        scenario(
            attrs=lambda: {"mean": torchmetrics.MeanMetric()},
            training_step=train_step_logging(
                lambda self, b, i, loss: (
                    self.mean(loss.detach() * (i + 1)),
                    self.log("mean", self.mean, on_step=True, on_epoch=True, prog_bar=True),
                )
            ),
        ),
        dict(stages=("fit",)),
    ),
    "metric-update-epoch-only": (
        scenario(
            attrs=lambda: {"err": torchmetrics.MeanSquaredError(), "tmean": torchmetrics.MeanMetric()},
            training_step=train_step_logging(
                lambda self, b, i, loss: (self.tmean.update(loss.detach()), self.log("tmean", self.tmean, on_step=False, on_epoch=True))
            ),
            validation_step=lambda self, batch, batch_idx: (
                self.err.update(self(batch[0]), batch[1]),
                self.log("val_mse", self.err, prog_bar=True),
            ),
            test_step=lambda self, batch, batch_idx: (self.err(self(batch[0]), batch[1]), self.log("test_mse", self.err)),
        ),
        dict(stages=FIT_VALIDATE_TEST),
    ),
    "metric-collection-log-dict": (
        scenario(
            attrs=lambda: {
                "coll": torchmetrics.MetricCollection(
                    {"mse": torchmetrics.MeanSquaredError(), "mae": torchmetrics.MeanAbsoluteError()}, prefix="val_"
                )
            },
            validation_step=lambda self, batch, batch_idx: (self.coll(self(batch[0]), batch[1]), self.log_dict(self.coll)),
        ),
        dict(stages=("fit", "validate")),
    ),
    "log-dict-of-values-and-metrics": (
        scenario(
            attrs=lambda: {"mx": torchmetrics.MaxMetric()},
            training_step=train_step_logging(
                lambda self, b, i, loss: (
                    self.mx(loss.detach()),
                    self.log_dict({"a": loss, "b": float(i), "mx": self.mx}, on_step=True, on_epoch=True, prog_bar=True),
                )
            ),
            validation_step=val_step_logging(lambda self, b, i, loss: self.log_dict({"va": loss, "vb": i * 2}, reduce_fx="max")),
        ),
        dict(stages=("fit", "validate")),
    ),
    # batch sizes: inferred from the batch (uneven last batch), given, and a different one per batch
    "batch-size-inferred": (
        scenario(
            training_step=train_step_logging(lambda self, b, i, loss: self.log("t", b[1].mean(), on_epoch=True)),
            validation_step=val_step_logging(lambda self, b, i, loss: self.log("v", b[1].mean())),
            test_step=lambda self, batch, batch_idx: self.log("t2", batch[1].sum()),
        ),
        dict(stages=FIT_VALIDATE_TEST),
    ),
    "batch-size-given": (
        scenario(
            training_step=train_step_logging(
                lambda self, b, i, loss: self.log("t", float(i), on_step=True, on_epoch=True, batch_size=i + 1)
            ),
            validation_step=val_step_logging(lambda self, b, i, loss: self.log("v", loss, batch_size=3)),
        ),
        dict(stages=("fit", "validate")),
    ),
    # prog_bar, logger=False, enable_graph, rank_zero_only
    "bar-and-logger-options": (
        scenario(
            training_step=train_step_logging(
                lambda self, b, i, loss: (
                    self.log("both", loss, on_step=True, on_epoch=True, prog_bar=True),
                    self.log("hidden", float(i), prog_bar=True, logger=False),
                    self.log("hidden_epoch_too", float(i), on_epoch=True, logger=False),
                    self.log("graph", loss, enable_graph=True, on_epoch=True),
                    self.log("rank0", loss * 2, rank_zero_only=True, sync_dist=True, prog_bar=True),
                )
            ),
            validation_step=val_step_logging(
                lambda self, b, i, loss: (
                    self.log("v_both", loss, on_step=True, on_epoch=True, prog_bar=True),
                    self.log("v_hidden", loss, logger=False, prog_bar=True),
                )
            ),
        ),
        dict(stages=FIT_VALIDATE_TEST),
    ),
    # reductions other than the mean, in the steps and in the batch hooks
    "reduce-fx": (
        scenario(
            training_step=train_step_logging(
                lambda self, b, i, loss: (
                    self.log("mx", loss, on_step=True, on_epoch=True, reduce_fx="max"),
                    self.log("mn", loss, on_epoch=True, reduce_fx="min", prog_bar=True),
                    self.log("sm", float(i + 1), on_epoch=True, reduce_fx="sum"),
                    self.log("tmax", loss, on_epoch=True, on_step=False, reduce_fx=torch.max),
                    self.log("tsum", loss, on_epoch=True, reduce_fx=torch.sum),
                )
            ),
            on_validation_batch_end=lambda self, outputs, batch, batch_idx, dataloader_idx=0: (
                self.log("vb_sum", float(batch_idx + 1), reduce_fx="sum"),
                self.log("vb_min", batch[1].mean(), reduce_fx=torch.min),
            ),
        ),
        dict(stages=("fit", "validate")),
    ),
    # numbers of every kind, and tensors that are not float32
    "value-kinds": (
        scenario(
            attrs=lambda: {"scale": torch.nn.Parameter(torch.tensor(1.0))},
            training_step=kinds_step,
        ),
        dict(stages=("fit",)),
    ),
    # the same name from a step and from an epoch hook
    "same-key-step-and-epoch-hook": (
        scenario(
            training_step=train_step_logging(lambda self, b, i, loss: self.log("k", loss)),
            on_train_epoch_end=lambda self: self.log("k", 100.0 + self.current_epoch),
            validation_step=val_step_logging(lambda self, b, i, loss: self.log("vk", loss)),
            on_validation_epoch_end=lambda self: self.log("vk", 7.0),
        ),
        dict(stages=("fit", "validate")),
    ),
    # results of validate()/test() when only on_validation_epoch_end logs
    "epoch-end-only-results": (
        scenario(
            validation_step=lambda self, batch, batch_idx: None,
            test_step=lambda self, batch, batch_idx: None,
            on_validation_epoch_end=lambda self: self.log_dict({"score": 1.5 + self.current_epoch, "other": 2}, prog_bar=True),
            on_test_epoch_end=lambda self: self.log("tscore", torch.tensor(3.0)),
        ),
        dict(stages=FIT_VALIDATE_TEST),
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(tmp_path, name):
    make, options = SCENARIOS[name]
    expected, got = both(tmp_path, make, **options)
    assert_same(expected, got)


class DictSamples(Dataset):
    """Samples as dicts with a string first: the batch size is found in the first tensor."""

    def __init__(self, n: int, seed: int = 0) -> None:
        loader = data(n, batch_size=n, seed=seed)
        self.x, self.y = next(iter(loader))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"id": f"sample{i}", "x": self.x[i], "y": self.y[i]}


class ListSamples(DictSamples):
    def __getitem__(self, i: int) -> Any:
        return [[f"sample{i}", i], self.x[i], self.y[i]]  # a list, then a nested list without tensors first


@pytest.mark.parametrize("samples", [DictSamples, ListSamples])
def test_batch_size_is_inferred_from_dict_and_list_batches(tmp_path, samples):
    make = scenario(
        training_step=train_step_logging(lambda self, b, i, loss: self.log("t", loss, on_step=False, on_epoch=True)),
        validation_step=val_step_logging(lambda self, b, i, loss: self.log("v", loss)),
        test_step=val_step_logging(lambda self, b, i, loss: self.log("t2", loss, prog_bar=True)),
    )
    loaders = dict(train=DataLoader(samples(20), batch_size=8), val=DataLoader(samples(12, seed=1), batch_size=8))
    expected, got = both(tmp_path, make, stages=FIT_VALIDATE_TEST, **loaders)
    assert_same(expected, got)


def two_loaders() -> list[DataLoader]:
    return [data(12, batch_size=8, seed=1), data(6, batch_size=4, seed=2)]


def multi_step(self: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
    loss = mse(self, batch)
    self.log("v", loss)
    self.log("v_both", loss, on_step=True, prog_bar=True)
    self.log(f"own_{dataloader_idx}", loss, add_dataloader_idx=False)


MULTI_LOADER = {
    "steps-and-epoch-end": scenario(
        validation_step=multi_step,
        test_step=multi_step,
        on_validation_epoch_end=lambda self: self.log("score", 2.5),
        on_test_epoch_end=lambda self: self.log_dict({"tscore": 1.0, "n": 4}),
    ),
    "epoch-end-only": scenario(
        validation_step=lambda self, batch, batch_idx, dataloader_idx=0: None,
        test_step=lambda self, batch, batch_idx, dataloader_idx=0: None,
        on_validation_epoch_end=lambda self: self.log("score", 2.5 + self.current_epoch, prog_bar=True),
        on_test_epoch_end=lambda self: self.log("tscore", 1.0),
    ),
    "batch-end-hook": scenario(
        validation_step=lambda self, batch, batch_idx, dataloader_idx=0: mse(self, batch),
        test_step=lambda self, batch, batch_idx, dataloader_idx=0: mse(self, batch),
        on_validation_batch_end=lambda self, out, batch, batch_idx, dataloader_idx=0: self.log("out", out),
        on_test_batch_end=lambda self, out, batch, batch_idx, dataloader_idx=0: self.log("out", out, on_step=True),
    ),
}


@pytest.mark.parametrize("name", sorted(MULTI_LOADER))
def test_validate_and_test_results_with_several_loaders(tmp_path, name):
    expected, got = both(tmp_path, MULTI_LOADER[name], stages=FIT_VALIDATE_TEST, val=two_loaders())
    assert_same(expected, got)


def test_logged_values_are_float_tensors_taken_when_logged(tmp_path):
    # ints, bools, numpy scalars, int and half tensors become float32 tensors; a parameter's value is
    # the one at the call, not after the optimizer changed it
    make, _ = SCENARIOS["value-kinds"]
    dtypes = {}
    for fw in BOTH:
        torch.manual_seed(0)
        module, _ = make(fw)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, limit_val_batches=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, data(**TRAIN))
        dtypes[fw.name] = {k: (v.dtype, v.requires_grad) for k, v in trainer.callback_metrics.items()}
    assert dtypes["ember"] == dtypes["lightning"]


# --------------------------------------------------------------------------- deliberate differences (pinned)


def test_difference_one_name_from_two_step_hooks_is_one_series(tmp_path):
    # Lightning keeps a series per (hook, name) and shows the one registered last; Ember tells the
    # epoch hooks apart (see "same-key-step-and-epoch-hook") but not the per-step hooks, whose values
    # under one name make one series (telling them apart would cost every step)
    make = scenario(
        training_step=train_step_logging(lambda self, b, i, loss: self.log("k", 10.0 + i, on_epoch=True)),
        on_train_batch_end=lambda self, outputs, batch, batch_idx: self.log("k", float(batch_idx), on_epoch=True),
    )
    expected, got = both(tmp_path, make, stages=("fit",), limit_val_batches=0, max_epochs=1)
    assert expected["csv"] == [*got["csv"][:-1], {**got["csv"][-1], "k_epoch": 0.8}]  # only the epoch mean differs
    assert expected["fit views"]["callback"]["k_epoch"] == 0.8  # on_train_batch_end's alone: (0*8 + 1*8 + 2*4) / 20
    assert got["fit views"]["callback"]["k_epoch"] == 5.8  # both hooks' values, each weighted by the batch size


def test_difference_a_batch_without_tensors_weighs_one(tmp_path):
    # Lightning cannot infer a batch size from a batch without tensors and raises, asking for
    # batch_size=; Ember weighs each such batch 1 (the plain mean over batches)
    class Words(Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> str:
            return "word" * (i + 1)

    make = scenario(validation_step=lambda self, batch, batch_idx: self.log("length", float(len(batch[-1]))))
    words = DataLoader(Words(), batch_size=4)
    lightning = observe(LIGHTNING, tmp_path, make(LIGHTNING)[0], ("validate",), val=words)
    ember = observe(EMBER, tmp_path, make(EMBER)[0], ("validate",), val=words)
    assert "could not infer the batch_size" in str(lightning["error"])
    assert ember["validate results"] == [{"length": (16.0 + 24.0) / 2}]


def test_difference_a_metric_need_not_be_an_attribute(tmp_path):
    # Lightning needs a logged torchmetrics Metric to be an attribute of the module (to restore its
    # state); Ember logs any Metric object
    def validation_step(self: Any, batch: Any, batch_idx: int) -> None:
        if not hasattr(self, "_loose"):
            self.__dict__["_loose"] = torchmetrics.MeanMetric()  # not a registered submodule
        self._loose.update(batch[1].mean())
        self.log("loose", self._loose)

    make = scenario(validation_step=validation_step)
    lightning = observe(LIGHTNING, tmp_path, make(LIGHTNING)[0], ("validate",))
    ember = observe(EMBER, tmp_path, make(EMBER)[0], ("validate",))
    assert "Could not find the `LightningModule` attribute" in str(lightning["error"])
    assert list(ember["validate results"][0]) == ["loose"]
