"""``ember.DataModule``: the data side of a run, in one reusable object (Lightning's names)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ember.module import AttributeDict, Module
from ember.tree import tree_map


class DataModule:
    """Groups data preparation and loaders.

    The Trainer calls ``prepare_data()`` (once per machine: downloads, writing to disk), then
    ``setup(stage)`` with ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``, then the
    ``*_dataloader()`` methods that stage needs, and ``teardown(stage)`` at the end. Batch transfer
    hooks defined here (``on_before_batch_transfer``, ``transfer_batch_to_device``,
    ``on_after_batch_transfer``) are used instead of the module's, as in Lightning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._hparams = AttributeDict()
        self.trainer: Any = None
        #: True: ``prepare_data`` runs on local rank 0 of every machine; False: only on global rank 0
        self.prepare_data_per_node = True

    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters recorded by ``save_hyperparameters()``."""
        if "_hparams" not in self.__dict__:
            self._hparams = AttributeDict()
        return self._hparams

    save_hyperparameters = Module.save_hyperparameters

    def prepare_data(self) -> None:
        """Download or write data to disk; called once, before ``setup``."""

    def setup(self, stage: str) -> None:
        """Build datasets for ``stage`` ("fit", "validate", "test", "predict")."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built."""

    def train_dataloader(self) -> Any:
        """The training loader (or a list/dict of loaders, or a ``CombinedLoader``)."""
        raise NotImplementedError(f"{type(self).__name__} has no train_dataloader()")

    def val_dataloader(self) -> Any:
        """The validation loader (or a list/dict of loaders, or a ``CombinedLoader``)."""
        raise NotImplementedError(f"{type(self).__name__} has no val_dataloader()")

    def test_dataloader(self) -> Any:
        """The test loader (or a list/dict of loaders, or a ``CombinedLoader``)."""
        raise NotImplementedError(f"{type(self).__name__} has no test_dataloader()")

    def predict_dataloader(self) -> Any:
        """The prediction loader (or a list/dict of loaders, or a ``CombinedLoader``)."""
        raise NotImplementedError(f"{type(self).__name__} has no predict_dataloader()")

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Any = None,
        val_dataset: Any = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> DataModule:
        """A datamodule whose ``*_dataloader()`` methods wrap the given datasets, as Lightning's.

        Each dataset may be a ``Dataset`` or a dict/list/tuple of them (the loader methods then
        return the same collection of loaders). Loaders use ``batch_size`` and ``num_workers``;
        training loaders shuffle (not an ``IterableDataset``). ``batch_size``/``num_workers`` go to
        ``cls.__init__`` where it takes them, with ``datamodule_kwargs``. Memory is pinned when CUDA
        is available (Lightning always asks for it, and torch warns about it on a CPU-only machine)::

            dm = ember.DataModule.from_datasets(train_ds, val_ds, batch_size=32)
            trainer.fit(model, datamodule=dm)
        """
        for name, value in (("batch_size", batch_size), ("num_workers", num_workers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "batch_size" else 0):
                least = 1 if name == "batch_size" else 0
                raise ValueError(f"from_datasets({name}={value!r}): it must be an integer >= {least}")

        def loaders(datasets: Any, shuffle: bool) -> Any:
            def make(ds: Any) -> Any:
                if not isinstance(ds, Dataset):
                    return ds
                return DataLoader(
                    ds,
                    batch_size=batch_size,
                    shuffle=shuffle and not isinstance(ds, IterableDataset),
                    num_workers=num_workers,
                    pin_memory=torch.cuda.is_available(),
                )

            return tree_map(make, datasets)

        params = inspect.signature(cls.__init__).parameters
        special = {"batch_size": batch_size, "num_workers": num_workers}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            special = {k: v for k, v in special.items() if k in params and k != "self"}
        datamodule = cls(**datamodule_kwargs, **special)
        for method, datasets, shuffle in (
            ("train_dataloader", train_dataset, True),
            ("val_dataloader", val_dataset, False),
            ("test_dataloader", test_dataset, False),
            ("predict_dataloader", predict_dataset, False),
        ):
            if datasets is not None:
                setattr(datamodule, method, lambda d=datasets, s=shuffle: loaders(d, s))
        return datamodule

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Return the batch to move to the device; when overridden, used instead of the module's."""
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move the batch to ``device``; when overridden, used instead of the module's."""
        return Module.transfer_batch_to_device(self, batch, device, dataloader_idx)  # type: ignore[arg-type]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Return the batch the step receives; when overridden, used instead of the module's."""
        return batch

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, **kwargs: Any) -> Any:
        """A new datamodule built from the hyperparameters a checkpoint saved of one of this class
        (``kwargs`` override them), then given the state its ``state_dict()`` saved, as Lightning's::

            dm = MyData.load_from_checkpoint("last.ckpt", batch_size=64)
        """
        from ember.checkpoint.loading import load_datamodule_from_checkpoint

        return load_datamodule_from_checkpoint(cls, checkpoint_path, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this datamodule (plain values)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned."""
        return None
