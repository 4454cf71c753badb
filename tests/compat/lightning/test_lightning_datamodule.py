"""DataModules, Lightning against Ember: the hooks a DataModule gets in each stage and their
arguments, its hyperparameters and state in checkpoints, and the batch transfer hooks (on the module,
on the datamodule, on both) with the batches the steps receive."""

from __future__ import annotations

import collections
import dataclasses
import difflib
import pprint
import warnings
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, quiet_fit
from pytorch_lightning.trainer.connectors import data_connector
from torch import nn
from torch.utils.data import DataLoader

import ember

DATAMODULE = {"lightning": pl.LightningDataModule, "ember": ember.DataModule}


def ids(n: int, batch_size: int, start: int = 0) -> DataLoader:
    return DataLoader(torch.arange(start, start + n, dtype=torch.float32), batch_size=batch_size)


def plain(value: Any) -> Any:
    """A stage argument (Lightning's and Ember's ``TrainerFn``) or a batch as plain values."""
    if isinstance(value, str):
        return str(value.value) if hasattr(value, "value") else value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def same(ours: Any, theirs: Any) -> None:
    """Assert Ember observed what Lightning did, showing the lines that differ."""
    if ours != theirs:
        lines = difflib.unified_diff(pprint.pformat(theirs).splitlines(), pprint.pformat(ours).splitlines(), lineterm="")
        pytest.fail("Lightning (-) and Ember (+) differ:\n" + "\n".join(lines))


def stepping_module(fw: Framework, log: list, val_loaders: int = 1) -> Any:
    """A module whose steps record ``(stage, dataloader_idx, batch)``; its loaders come from a datamodule."""

    class Model(fw.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            log.append(("training_step", plain(batch)))
            return (self.w * torch.as_tensor(first(batch)).float().mean()) ** 2

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            log.append(("validation_step", self.trainer.sanity_checking, dataloader_idx, plain(batch)))

        def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            log.append(("test_step", dataloader_idx, plain(batch)))

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            log.append(("predict_step", dataloader_idx, plain(batch)))
            return batch

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Model()


def first(batch: Any) -> Any:
    if isinstance(batch, dict):
        return next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


def recording_datamodule(fw: Framework, log: list, val_loaders: int = 1) -> Any:
    """A datamodule recording every hook the Trainer calls, with its arguments and what it sees."""

    class Data(DATAMODULE[fw.name]):
        def __init__(self) -> None:
            super().__init__()
            self.dims = (1, 28, 28)  # a custom attribute, as Lightning's old ``dims``

        def prepare_data(self) -> None:
            log.append(("prepare_data", self.trainer is not None))

        def setup(self, stage: str) -> None:
            log.append(("setup", plain(stage), self.trainer.datamodule is self, self.trainer.state.fn == stage))

        def teardown(self, stage: str) -> None:
            log.append(("teardown", plain(stage)))

        def train_dataloader(self) -> Any:
            log.append(("train_dataloader", self.trainer.current_epoch))
            return ids(4, 2)

        def val_dataloader(self) -> Any:
            log.append(("val_dataloader", self.trainer.sanity_checking))
            loaders = [ids(2, 2, start=100 * (i + 1)) for i in range(val_loaders)]
            return loaders[0] if val_loaders == 1 else loaders

        def test_dataloader(self) -> Any:
            log.append(("test_dataloader",))
            return [ids(2, 2, start=10), ids(2, 2, start=20)]

        def predict_dataloader(self) -> Any:
            log.append(("predict_dataloader",))
            return ids(2, 2, start=30)

    return Data()


def test_hook_sequence_and_arguments_over_every_stage(tmp_path):
    def scenario(fw):
        log: list = []
        dm = recording_datamodule(fw, log)
        model = stepping_module(fw, log)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=2, num_sanity_val_steps=1)
        quiet_fit(trainer, model, datamodule=dm)
        log.append(("after fit", dm.trainer is trainer, trainer.datamodule is dm, dm.dims))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.validate(model, datamodule=dm, verbose=False)
            trainer.test(model, datamodule=dm, verbose=False)
            trainer.predict(model, datamodule=dm)
        log.append(("after all", dm.trainer is trainer, trainer.datamodule is dm))
        return log

    ours, theirs = scenario(EMBER), scenario(LIGHTNING)
    # Known difference: Lightning asks for val_dataloader() first, for its sanity check, then for
    # train_dataloader(); Ember asks for both, training first, before the sanity check. Same calls.
    assert theirs[2:5] == [("val_dataloader", True), ("validation_step", True, 0, [100.0, 101.0]), ("train_dataloader", 0)]
    assert ours[2:5] == [("train_dataloader", 0), ("val_dataloader", False), ("validation_step", True, 0, [100.0, 101.0])]
    same(ours[:2] + ours[5:], theirs[:2] + theirs[5:])


def test_the_datamodule_is_positional_and_a_new_one_replaces_the_old(tmp_path):
    def scenario(fw):
        log: list = []
        dm, other = recording_datamodule(fw, log), recording_datamodule(fw, [])
        model = stepping_module(fw, [])
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, num_sanity_val_steps=0)
        quiet_fit(trainer, model, dm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.test(model, datamodule=other, verbose=False)
        return trainer.datamodule is other, dm.trainer is trainer, other.trainer is trainer, log[:3]

    same(scenario(EMBER), scenario(LIGHTNING))


@pytest.mark.parametrize("per_node", [True, False])
def test_prepare_data_per_node(tmp_path, per_node):
    def scenario(fw):
        log: list = []
        dm = recording_datamodule(fw, log)
        dm.prepare_data_per_node = per_node
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, num_sanity_val_steps=0)
        quiet_fit(trainer, stepping_module(fw, []), datamodule=dm)
        return [entry for entry in log if entry[0] == "prepare_data"], DATAMODULE[fw.name]().prepare_data_per_node

    same(scenario(EMBER), scenario(LIGHTNING))


def test_dataloaders_and_a_datamodule_together_are_refused(tmp_path):
    for fw in BOTH:
        dm = recording_datamodule(fw, [])
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        model = stepping_module(fw, [])
        with pytest.raises(Exception, match=r"(?i)(cannot pass|not both).*|.*datamodule") as fit_err:
            quiet_fit(trainer, model, train_dataloaders=ids(4, 2), datamodule=dm)
        with pytest.raises(Exception, match=r"(?i)cannot pass|not both") as test_err:
            trainer.test(model, dataloaders=ids(4, 2), datamodule=dm)
        assert "datamodule" in str(fit_err.value) and "datamodule" in str(test_err.value)


def test_a_datamodule_without_val_dataloader_skips_validation(tmp_path):
    def scenario(fw):
        log: list = []

        class Data(DATAMODULE[fw.name]):
            def train_dataloader(self) -> Any:
                return ids(4, 2)

        model = stepping_module(fw, log)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        quiet_fit(trainer, model, datamodule=Data())
        return [entry[0] for entry in log], trainer.num_val_batches

    same(scenario(EMBER), scenario(LIGHTNING))


# --------------------------------------------------------------------------- hyperparameters and state


def hparams_datamodule(fw: Framework) -> type:
    class Data(DATAMODULE[fw.name]):
        def __init__(self, batch_size: int = 2, name: str = "x", sizes: tuple = (1, 2)) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.seen = 0

        def train_dataloader(self) -> Any:
            return ids(4, self.hparams.batch_size)

        def val_dataloader(self) -> Any:
            return ids(2, 2)

        def state_dict(self) -> dict[str, Any]:
            return {"seen": self.seen}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.seen = state_dict["seen"] + 1000

    Data.__qualname__ = "Data"
    return Data


def test_datamodule_hyperparameters_in_the_checkpoint_and_load_from_checkpoint(tmp_path):
    def scenario(fw):
        Data = hparams_datamodule(fw)
        dm = Data(batch_size=1, name="y")
        dm.seen = 7
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        quiet_fit(trainer, stepping_module(fw, []), datamodule=dm)
        path = tmp_path / fw.name / "m.ckpt"
        trainer.save_checkpoint(path)
        ckpt = torch.load(path, weights_only=False)
        loaded = Data.load_from_checkpoint(path, name="z")
        return (
            dict(dm.hparams),
            type(dm.hparams).__name__,
            ckpt["datamodule_hyper_parameters"],
            dict(loaded.hparams),
            type(loaded).__name__,
            loaded.seen,
        )

    ours, theirs = scenario(EMBER), scenario(LIGHTNING)
    # Lightning keeps the tuple; Ember's hyperparameters are plain data (migration guide, item 2)
    assert theirs[0]["sizes"] == (1, 2) and ours[0]["sizes"] == [1, 2]
    same(_tuples_as_lists(ours), _tuples_as_lists(theirs))


def _tuples_as_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples_as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tuples_as_lists(v) for v in value]
    return value


def test_datamodule_state_is_saved_and_restored_on_resume(tmp_path):
    def scenario(fw):
        Data = hparams_datamodule(fw)
        dm = Data()
        dm.seen = 5
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        quiet_fit(trainer, stepping_module(fw, []), datamodule=dm)
        path = tmp_path / fw.name / "m.ckpt"
        trainer.save_checkpoint(path)
        again = Data()
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=2)
        quiet_fit(trainer, stepping_module(fw, []), datamodule=again, ckpt_path=path)
        # the same datamodule evaluating a checkpoint restores it too
        evaluated = Data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fw.trainer(tmp_path / fw.name).validate(stepping_module(fw, []), datamodule=evaluated, ckpt_path=path)
        ckpt = torch.load(path, weights_only=False)
        key = "Data" if fw is LIGHTNING else "datamodule"
        return ckpt[key], again.seen, evaluated.seen

    same(scenario(EMBER), scenario(LIGHTNING))


# --------------------------------------------------------------------------- batch transfer hooks


def transfer_hooks(log: list, owner: str) -> dict[str, Any]:
    """The three batch transfer hooks, recording ``(owner, hook, dataloader_idx, batch)``; before the
    transfer they add 1, after it they multiply by 10, so the step shows which ran."""

    def on_before_batch_transfer(self: Any, batch: Any, dataloader_idx: int) -> Any:
        log.append((owner, "before", dataloader_idx, plain(batch)))
        return batch + 1

    def transfer_batch_to_device(self: Any, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        log.append((owner, "transfer", str(device), dataloader_idx))
        return batch.to(device)

    def on_after_batch_transfer(self: Any, batch: Any, dataloader_idx: int) -> Any:
        log.append((owner, "after", dataloader_idx, plain(batch)))
        return batch * 10

    return {
        "on_before_batch_transfer": on_before_batch_transfer,
        "transfer_batch_to_device": transfer_batch_to_device,
        "on_after_batch_transfer": on_after_batch_transfer,
    }


@pytest.mark.parametrize(
    "where",
    [("module",), ("datamodule",), ("module", "datamodule"), ("module", "datamodule-after-only")],
    ids=["module", "datamodule", "both", "split"],
)
def test_batch_transfer_hooks_in_every_stage(tmp_path, where):
    def scenario(fw):
        log: list = []
        model = stepping_module(fw, log)
        dm = recording_datamodule(fw, [], val_loaders=2)
        for owner in where:
            hooks = transfer_hooks(log, owner.split("-")[0])
            if owner.endswith("after-only"):
                hooks = {"on_after_batch_transfer": hooks["on_after_batch_transfer"]}
            target = type(model) if owner == "module" else type(dm)
            for name, fn in hooks.items():
                setattr(target, name, fn)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, num_sanity_val_steps=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overridden in both", for which Lightning warns
            trainer.fit(model, datamodule=dm)
            trainer.test(model, datamodule=dm, verbose=False)
            trainer.predict(model, datamodule=dm)
        return log

    same(scenario(EMBER), scenario(LIGHTNING))


def test_overriding_a_transfer_hook_in_both_warns(tmp_path):
    def scenario(fw):
        model = stepping_module(fw, [])
        dm = recording_datamodule(fw, [])
        for target, owner in ((type(model), "module"), (type(dm), "datamodule")):
            target.on_before_batch_transfer = transfer_hooks([], owner)["on_before_batch_transfer"]
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, num_sanity_val_steps=0)
        data_connector.warning_cache.clear()  # Lightning warns once per process
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, datamodule=dm)
        return sorted({str(w.message) for w in caught if "overridden" in str(w.message)})

    ours, theirs = scenario(EMBER), scenario(LIGHTNING)
    assert len(ours) == len(theirs) == 1
    assert "on_before_batch_transfer" in ours[0] and "DataModule" in ours[0]


# --------------------------------------------------------------------------- custom batch types


@dataclasses.dataclass
class Pair:
    x: torch.Tensor
    label: str


Named = collections.namedtuple("Named", ["x", "y"])


class Tagged(torch.Tensor):
    pass


class Movable:
    """An object with ``.to()``: moved by calling it."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.moved_to: list[str] = []

    def to(self, device: Any, **kwargs: Any) -> Movable:
        self.moved_to.append(str(device))
        return self


def custom_batches(kind: str) -> list[Any]:
    x = torch.arange(4, dtype=torch.float64).reshape(2, 2)
    return {
        "dataclass": [Pair(x, "a")],
        "namedtuple": [Named(x, torch.ones(2, dtype=torch.int64))],
        "dict": [{"x": x, "meta": "m", "n": 3}],
        "subclass": [x.as_subclass(Tagged)],
        "to": [Movable(x)],
    }[kind]


class Batches:
    """A loader of the given batches as they are (a list would be a list of loaders)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def describe(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return (type(batch).__name__, str(batch.dtype), batch.tolist())
    if dataclasses.is_dataclass(batch):
        return (type(batch).__name__, {f.name: describe(getattr(batch, f.name)) for f in dataclasses.fields(batch)})
    if isinstance(batch, Movable):
        return (type(batch).__name__, describe(batch.x))
    if isinstance(batch, dict):
        return (type(batch).__name__, {k: describe(v) for k, v in batch.items()})
    if isinstance(batch, tuple):
        return (type(batch).__name__, [describe(v) for v in batch])
    return batch


@pytest.mark.parametrize("kind", ["dataclass", "namedtuple", "dict", "subclass", "to"])
@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hooked"])
def test_custom_batch_types_reach_the_steps(tmp_path, kind, hooked):
    def scenario(fw):
        seen: list = []
        batches = custom_batches(kind)

        class Model(fw.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = nn.Parameter(torch.ones(1))

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                seen.append((describe(batch), batch is batches[0]))
                return self.w.sum() * 0

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.0)

        if hooked:
            Model.on_after_batch_transfer = lambda self, batch, idx: (seen.append(("after", idx)), batch)[1]
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        quiet_fit(trainer, Model(), train_dataloaders=Batches(batches))
        return seen, getattr(batches[0], "moved_to", None)

    ours, theirs = scenario(EMBER), scenario(LIGHTNING)
    if hooked:
        same(ours, theirs)
    else:
        # Deliberate: on the CPU without transfer hooks Ember hands the step the loader's batch as it
        # is (no per-step copy, no ``.to()`` call); Lightning rebuilds it and calls ``.to("cpu")``.
        same([describe for describe, _ in ours[0]], [describe for describe, _ in theirs[0]])
        assert [same_object for _, same_object in ours[0]] == [True]
        assert ours[1] in (None, []) and theirs[1] in (None, ["cpu"])
