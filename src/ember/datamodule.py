"""``ember.DataModule``: the data side of a run, in one reusable object (Lightning's names)."""

from __future__ import annotations

from typing import Any

from ember.module import AttributeDict, Module


class DataModule:
    """Groups data preparation and loaders.

    The Trainer calls ``prepare_data()`` (once per machine: downloads, writing to disk), then
    ``setup(stage)`` with ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``, then the
    ``*_dataloader()`` methods that stage needs, and ``teardown(stage)`` at the end.
    """

    def __init__(self) -> None:
        self._hparams = AttributeDict()
        self.trainer: Any = None

    @property
    def hparams(self) -> AttributeDict:
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
        raise NotImplementedError(f"{type(self).__name__} has no train_dataloader()")

    def val_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no val_dataloader()")

    def test_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no test_dataloader()")

    def predict_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no predict_dataloader()")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None
