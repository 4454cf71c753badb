"""Data loading, Lightning against Ember: overfit_batches, reload_dataloaders_every_n_epochs, loaders
without a length, an epoch with no data, DataModule.from_datasets and CombinedLoader — the batches
each step sees and when the loader hooks are called."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, quiet_fit
from pytorch_lightning.utilities.combined_loader import CombinedLoader as PLCombinedLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler

import ember
from ember.utilities import CombinedLoader as EmberCombinedLoader

COMBINED = {"lightning": PLCombinedLoader, "ember": EmberCombinedLoader}
DATAMODULE = {"lightning": pl.LightningDataModule, "ember": ember.DataModule}


def ids(n: int, batch_size: int, start: int = 0, shuffle: bool = False) -> DataLoader:
    """Batches of sample numbers, so a test can tell which samples a step saw."""
    return DataLoader(torch.arange(start, start + n), batch_size=batch_size, shuffle=shuffle)


def content(batch: Any) -> Any:
    """A batch as plain Python values (dicts, lists, None kept)."""
    if isinstance(batch, torch.Tensor):
        return batch.tolist()
    if isinstance(batch, dict):
        return {k: content(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [content(v) for v in batch]
    return batch


def first_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, dict) else batch
    return next(first_tensor(v) for v in values if v is not None)


def recording_module(fw: Framework, log: list, val_idx: bool = False, loaders: dict | None = None) -> Any:
    """Records ("train", epoch, batch_idx, batch) per training_step and ("val", ...) per validation_step
    (with dataloader_idx when ``val_idx``); ``loaders`` gives train/val loader factories as hooks."""

    class Recording(fw.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            log.append(("train", self.current_epoch, batch_idx, content(batch)))
            return (self.w * first_tensor(batch).float().mean()) ** 2

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    if val_idx:

        def validation_step(self: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            if not self.trainer.sanity_checking:
                log.append(("val", self.current_epoch, batch_idx, dataloader_idx, content(batch)))

    else:

        def validation_step(self: Any, batch: Any, batch_idx: int) -> None:
            if not self.trainer.sanity_checking:
                log.append(("val", self.current_epoch, batch_idx, content(batch)))

    Recording.validation_step = validation_step
    if loaders:
        for name, make in loaders.items():
            setattr(Recording, name, lambda self, make=make, name=name: (log.append((name, self.current_epoch)), make())[1])
    return Recording()


def run_fit(fw: Framework, tmp_path: Any, train: Any = None, val: Any = None, val_idx: bool = False,
            loaders: dict | None = None, quiet: bool = True, **options: Any) -> tuple[list, Any]:  # fmt: skip
    log: list = []
    torch.manual_seed(0)
    model = recording_module(fw, log, val_idx, loaders)
    trainer = fw.trainer(tmp_path / fw.name, **options)
    if quiet:
        quiet_fit(trainer, model, train, val)
    else:
        trainer.fit(model, train, val)
    return log, trainer


# ---------------------------------------------------------------- overfit_batches


@pytest.mark.parametrize("overfit", [2, 0.25, 1])
def test_overfit_batches_uses_the_same_batches_unshuffled(tmp_path, overfit):
    def scenario(fw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log, trainer = run_fit(
                fw, tmp_path, ids(32, 4, shuffle=True), ids(16, 4, start=100, shuffle=True),
                max_epochs=2, overfit_batches=overfit, num_sanity_val_steps=0, quiet=False,
            )  # fmt: skip
        shuffle_warnings = sum("shuffling" in str(w.message) for w in caught)
        return log, trainer.num_training_batches, shuffle_warnings > 0

    expected = scenario(LIGHTNING)
    assert expected[2]  # Lightning warns that it turns shuffling off
    assert scenario(EMBER) == expected


def test_overfit_batches_is_checked(tmp_path):
    for value in (-1, 1.5, "2"):
        with pytest.raises(Exception, match="overfit_batches"):
            EMBER.trainer(tmp_path, overfit_batches=value)


# ---------------------------------------------------------------- reload_dataloaders_every_n_epochs


def loader_calls(log: list) -> dict[str, list[int]]:
    """The epochs at which each loader hook was called, by hook."""
    out: dict[str, list[int]] = {}
    for entry in log:
        if entry[0].endswith("_dataloader"):
            out.setdefault(entry[0], []).append(entry[1])
    return out


@pytest.mark.parametrize(
    "options",
    [
        dict(reload_dataloaders_every_n_epochs=1),
        dict(reload_dataloaders_every_n_epochs=2),
        dict(reload_dataloaders_every_n_epochs=2, num_sanity_val_steps=0),
        dict(reload_dataloaders_every_n_epochs=1, check_val_every_n_epoch=2),
        dict(reload_dataloaders_every_n_epochs=3, check_val_every_n_epoch=2, num_sanity_val_steps=0),
        dict(reload_dataloaders_every_n_epochs=0),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_reload_dataloaders_every_n_epochs_calls_the_hooks_as_lightning(tmp_path, options):
    sizes = iter(range(8, 200, 4))  # each reload gets a longer loader: steps per epoch show which is used

    def scenario(fw):
        nonlocal sizes
        sizes = iter(range(8, 200, 4))
        hooks = {"train_dataloader": lambda: ids(next(sizes), 4), "val_dataloader": lambda: ids(4, 2, start=100)}
        log, trainer = run_fit(fw, tmp_path, loaders=hooks, max_epochs=5, **options)
        steps = [(e[1], len(e[3])) for e in log if e[0] == "train" and e[2] == 0]
        per_epoch = [sum(1 for e in log if e[0] == "train" and e[1] == epoch) for epoch in range(5)]
        calls = loader_calls(log)
        # Ember asks for the val loaders as fit() starts; Lightning at the sanity check, else at the start of
        # training when the first epoch validates, else at the first validation: compare the reloads after it
        first_val = calls["val_dataloader"].pop(0)
        return calls, first_val, per_epoch, len(steps), trainer.global_step

    lightning = scenario(LIGHTNING)
    ember_run = scenario(EMBER)
    assert (ember_run[0], *ember_run[2:]) == (lightning[0], *lightning[2:])
    assert ember_run[1] == 0 and lightning[1] in (0, 1)


def test_reload_dataloaders_every_n_epochs_is_checked(tmp_path):
    for value in (-1, 1.5, True):
        with pytest.raises(Exception, match="reload_dataloaders_every_n_epochs"):
            EMBER.trainer(tmp_path, reload_dataloaders_every_n_epochs=value)


# ---------------------------------------------------------------- loaders without a length


class Stream(IterableDataset):
    """``n`` numbers per pass, no length; ``empty_passes`` lists the passes (0-based) that yield nothing."""

    def __init__(self, n: int, empty_passes: tuple = ()) -> None:
        self.n, self.empty_passes, self.passes = n, empty_passes, 0

    def __iter__(self):
        this, self.passes = self.passes, self.passes + 1
        if this not in self.empty_passes:
            yield from range(self.n)


class NoLength:
    """An iterable whose ``__len__`` raises (as some wrappers' do)."""

    def __init__(self, n: int, error: type) -> None:
        self.loader, self.error = ids(n, 2), error

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        raise self.error("no length")


def epochs_log(fw: Framework, tmp_path: Any, train_factory: Any, val_factory: Any, **options: Any) -> tuple:
    log: list = []

    class Spy(fw.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append(("epoch_end", trainer.current_epoch, trainer.global_step))

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                log.append(("validated", trainer.current_epoch, trainer.global_step))

    steps, trainer = run_fit(
        fw, tmp_path, train_factory(), val_factory() if val_factory else None, callbacks=[Spy()], **options
    )
    trained = [(e[1], e[2], e[3]) for e in steps if e[0] == "train"]
    validated = [(e[1], e[2], e[3]) for e in steps if e[0] == "val"]
    batches = trainer.num_training_batches
    # a deliberate difference: Ember says None for "no length" where Lightning says inf (RunContext types it int | None)
    batches = None if batches == float("inf") else batches
    return trained, validated, log, trainer.global_step, trainer.current_epoch, batches


@pytest.mark.parametrize(
    "train, options",
    [
        ("stream", dict(max_steps=7)),
        ("stream", dict(max_epochs=2, limit_train_batches=3)),
        ("stream", dict(max_epochs=2)),
        ("type_error", dict(max_epochs=2)),
        ("not_implemented", dict(max_epochs=2, limit_train_batches=2)),
        ("not_implemented", dict(max_steps=5)),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_loaders_without_a_length_are_infinite_or_until_exhausted(tmp_path, train, options):
    factories = {
        "stream": lambda: DataLoader(Stream(10), batch_size=2),
        "type_error": lambda: NoLength(10, TypeError),
        "not_implemented": lambda: NoLength(10, NotImplementedError),
    }

    def scenario(fw):
        return epochs_log(fw, tmp_path, factories[train], lambda: DataLoader(Stream(4), batch_size=2), **options)

    expected = scenario(LIGHTNING)
    assert scenario(EMBER) == expected


@pytest.mark.parametrize("empty", [(1,), (0,), (0, 1, 2)], ids=lambda e: "empty-passes-" + "-".join(map(str, e)))
def test_an_epoch_without_data(tmp_path, empty):
    def scenario(fw):
        return epochs_log(
            fw, tmp_path, lambda: DataLoader(Stream(6, empty), batch_size=2), lambda: ids(4, 2, start=100),
            max_epochs=3, num_sanity_val_steps=0,
        )  # fmt: skip

    expected = scenario(LIGHTNING)
    assert scenario(EMBER) == expected


# ---------------------------------------------------------------- DataModule.from_datasets


class Numbers(Dataset):
    def __init__(self, n: int, start: int = 0) -> None:
        self.n, self.start = n, start

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return self.start + i


def describe(loaders: Any) -> Any:
    """What a user sees of a (collection of) loader(s): batch size, shuffling, workers, first batch."""
    if isinstance(loaders, dict):
        return {k: describe(v) for k, v in loaders.items()}
    if isinstance(loaders, (list, tuple)):
        return [describe(v) for v in loaders]
    shuffled = isinstance(loaders.sampler, RandomSampler)
    first = None if shuffled else content(next(iter(loaders)))
    return (type(loaders).__name__, loaders.batch_size, shuffled, loaders.num_workers, first)


@pytest.mark.parametrize(
    "datasets",
    [
        dict(train_dataset=Numbers(10), val_dataset=Numbers(4)),
        dict(train_dataset=Numbers(10), val_dataset=[Numbers(4), Numbers(6)], test_dataset=Numbers(3)),
        dict(train_dataset={"a": Numbers(6), "b": Numbers(8)}, predict_dataset=(Numbers(5),)),
        dict(train_dataset=Stream(6), val_dataset=Stream(3)),
    ],
    ids=["single", "list", "dict", "iterable"],
)
def test_from_datasets_builds_the_same_loaders(datasets):
    def scenario(fw):
        dm = DATAMODULE[fw.name].from_datasets(**datasets, batch_size=3, num_workers=0)
        out = {}
        for name in ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader"):
            try:
                out[name] = describe(getattr(dm, name)())
            except Exception as err:  # the kind of error is compared
                out[name] = type(err).__name__ in ("NotImplementedError", "MisconfigurationException")
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pin_memory without an accelerator
        expected = scenario(LIGHTNING)
        assert scenario(EMBER) == expected


def test_from_datasets_passes_batch_size_and_kwargs_to_a_subclass():
    def scenario(fw):
        class Data(DATAMODULE[fw.name]):
            def __init__(self, batch_size: int = 1, tag: str = "") -> None:
                super().__init__()
                self.size, self.tag = batch_size, tag

        dm = Data.from_datasets(train_dataset=Numbers(8), batch_size=4, num_workers=0, tag="x")
        return type(dm).__name__, dm.size, dm.tag, len(dm.train_dataloader())

    assert scenario(EMBER) == scenario(LIGHTNING)


def test_from_datasets_trains(tmp_path):
    def scenario(fw):
        dm = DATAMODULE[fw.name].from_datasets(Numbers(12), Numbers(4, 100), batch_size=4)
        log: list = []
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1, num_sanity_val_steps=0)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(recording_module(fw, log), datamodule=dm)
        return sorted(x for e in log if e[0] == "train" for x in e[3]), [e[3] for e in log if e[0] == "val"]

    assert scenario(EMBER) == scenario(LIGHTNING)


# ---------------------------------------------------------------- CombinedLoader


def iterables(kind: str) -> Any:
    if kind == "dict":
        return {"a": ids(6, 4), "b": ids(15, 5, start=100)}
    if kind == "list":
        return [ids(6, 4), ids(15, 5, start=100), ids(3, 3, start=200)]
    return {"a": ids(6, 4), "nested": [ids(4, 2, start=50), ids(2, 1, start=60)]}


MODES = ["max_size_cycle", "min_size", "max_size", "sequential"]


@pytest.mark.parametrize("kind", ["dict", "list", "nested"])
@pytest.mark.parametrize("mode", MODES)
def test_combined_loader_iterates_as_lightning(kind, mode):
    def scenario(fw):
        combined = COMBINED[fw.name](iterables(kind), mode)
        first = [(content(b), i, d) for b, i, d in combined]
        second = [(content(b), i, d) for b, i, d in combined]  # iterable again
        return first, second, len(combined), len(combined.flattened), type(combined.iterables).__name__

    assert scenario(EMBER) == scenario(LIGHTNING)


def test_combined_loader_default_mode_and_errors():
    for fw in BOTH:
        cls = COMBINED[fw.name]
        assert [i for _, i, _ in cls([ids(6, 2), ids(2, 2)])] == [0]  # min_size is the default
        with pytest.raises(ValueError, match="bogus"):
            cls([ids(2, 1)], "bogus")
    assert EmberCombinedLoader([ids(4, 2)], "max_size").sampler[0].__class__ is SequentialSampler


def test_combined_loader_without_lengths():
    for fw in BOTH:
        cls = COMBINED[fw.name]
        combined = cls({"s": DataLoader(Stream(4), batch_size=2), "n": ids(6, 2)}, "max_size")
        iter(combined)
        with pytest.raises(TypeError):
            len(combined)
        shortest = cls({"s": DataLoader(Stream(4), batch_size=2), "n": ids(6, 2)}, "min_size")
        iter(shortest)
        assert len(shortest) == 3


@pytest.mark.parametrize("mode", MODES[:3])
@pytest.mark.parametrize("options", [dict(), dict(limit_train_batches=2), dict(limit_train_batches=0.5)], ids=str)
def test_combined_loader_as_training_data(tmp_path, mode, options):
    def scenario(fw):
        train = COMBINED[fw.name]({"a": ids(6, 2), "b": ids(10, 2, start=100)}, mode)
        log, trainer = run_fit(fw, tmp_path, train, max_epochs=2, **options)
        return [e for e in log if e[0] == "train"], trainer.num_training_batches, trainer.global_step

    expected = scenario(LIGHTNING)
    assert scenario(EMBER) == expected


def test_a_sequential_combined_loader_is_not_training_data(tmp_path):
    for fw in BOTH:
        with pytest.raises(ValueError, match="sequential"):
            run_fit(fw, tmp_path, COMBINED[fw.name]([ids(4, 2), ids(4, 2)], "sequential"), max_epochs=1)


def test_a_list_of_training_loaders_is_combined_in_max_size_cycle(tmp_path):
    def scenario(fw):
        log, trainer = run_fit(fw, tmp_path, [ids(4, 2), ids(8, 2, start=100)], max_epochs=1)
        return [e for e in log if e[0] == "train"], trainer.num_training_batches

    assert scenario(EMBER) == scenario(LIGHTNING)


@pytest.mark.parametrize("mode", MODES)
def test_combined_loader_as_validation_and_test_data(tmp_path, mode):
    def scenario(fw):
        make = lambda: COMBINED[fw.name]([ids(4, 2, start=100), ids(6, 2, start=200)], mode)  # noqa: E731
        log, trainer = run_fit(fw, tmp_path, ids(4, 2), make(), val_idx=True, max_epochs=1, num_sanity_val_steps=0)
        del log[:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.validate(trainer.lightning_module if fw is LIGHTNING else trainer.model, make(), verbose=False)
        return log

    expected = scenario(LIGHTNING)
    assert scenario(EMBER) == expected


@pytest.mark.parametrize("kind", ["dict", "list", "combined", "no length"])
def test_trainer_train_dataloader_is_what_the_user_gave(tmp_path, kind):
    """``trainer.train_dataloader`` after a fit: the loader itself, or a CombinedLoader's iterables."""

    def scenario(fw):
        loaders = {"a": ids(4, 2), "b": ids(8, 2, start=100)}
        train = {
            "dict": loaders,
            "list": list(loaders.values()),
            "combined": COMBINED[fw.name](loaders, "max_size_cycle"),
            "no length": DataLoader(Stream(8), batch_size=2),
        }[kind]
        _, trainer = run_fit(fw, tmp_path, train, max_epochs=1, limit_train_batches=3)
        got = trainer.train_dataloader
        if isinstance(got, dict):
            return {k: type(v).__name__ for k, v in got.items()}
        if isinstance(got, list):
            return [type(v).__name__ for v in got]
        return type(got).__name__, type(got.dataset).__name__

    assert scenario(EMBER) == scenario(LIGHTNING)


@pytest.mark.parametrize("reload", [0, 1])
def test_limit_val_batches_zero_never_asks_for_val_dataloader(tmp_path, reload):
    def scenario(fw):
        hooks = {"train_dataloader": lambda: ids(8, 4), "val_dataloader": lambda: ids(4, 2, start=100)}
        log, trainer = run_fit(
            fw, tmp_path, loaders=hooks, max_epochs=2, limit_val_batches=0, reload_dataloaders_every_n_epochs=reload
        )
        return loader_calls(log), [e[0] for e in log if e[0] != "train"], trainer.global_step

    assert scenario(EMBER) == scenario(LIGHTNING)
