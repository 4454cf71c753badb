"""Restoring a checkpoint, Lightning against Ember: the order of ``on_load_checkpoint`` (the module's
before its weights are loaded, so that it can still edit them; a callback's before its
``load_state_dict``), and which stages restore what (every stage with a ``ckpt_path`` restores the
callbacks' and the datamodule's state; only ``fit`` the optimizers and the loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning_kit import BOTH, Framework, data, quiet_fit, regression_module


def recording(fw: Framework, events: list[str]) -> tuple[Any, Any]:
    base = regression_module(fw)

    class Model(base):
        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            weight = checkpoint["state_dict"]["layer.weight"]
            loaded = bool(torch.equal(self.layer.weight.detach(), weight))
            events.append(f"module.on_load_checkpoint(weights loaded={loaded})")

        def configure_optimizers(self) -> Any:
            events.append("configure_optimizers")
            return super().configure_optimizers()

    class Stateful(fw.Callback):
        def __init__(self) -> None:
            self.count = 0

        def on_train_batch_end(self, *args: Any) -> None:
            self.count += 1

        def state_dict(self) -> dict[str, Any]:
            return {"count": self.count}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            events.append(f"callback.load_state_dict({state['count']})")
            self.count = state["count"]

        def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            events.append("callback.on_load_checkpoint")

    return Model, Stateful


def saved_checkpoint(fw: Framework, tmp_path: Path) -> Path:
    Model, Stateful = recording(fw, [])
    torch.manual_seed(0)
    trainer = fw.trainer(tmp_path / fw.name / "first", max_epochs=1, limit_val_batches=0, callbacks=[Stateful()])
    quiet_fit(trainer, Model(), data(32))
    path = tmp_path / fw.name / "saved.ckpt"
    trainer.save_checkpoint(str(path))
    return path


def restore_events(fw: Framework, tmp_path: Path, stage: str) -> list[str]:
    path = saved_checkpoint(fw, tmp_path)
    events: list[str] = []
    Model, Stateful = recording(fw, events)
    torch.manual_seed(123)  # other initial weights than the checkpoint's
    model, callback = Model(), Stateful()
    trainer = fw.trainer(tmp_path / fw.name / "second", max_epochs=2, limit_val_batches=0, callbacks=[callback])
    if stage == "fit":
        quiet_fit(trainer, model, data(32), ckpt_path=str(path))
    else:
        getattr(trainer, stage)(model, data(16), ckpt_path=str(path), verbose=False)
    events.append(f"callback count after {stage}: {callback.count}")
    return events


@pytest.mark.parametrize("stage", ["fit", "validate", "test"])
def test_restore_order_and_what_each_stage_restores(tmp_path: Path, stage: str) -> None:
    lightning, ember_ = (restore_events(fw, tmp_path, stage) for fw in BOTH)
    assert lightning == ember_
    assert lightning[0] == "module.on_load_checkpoint(weights loaded=False)"  # the scenario sees the order
    assert "callback.load_state_dict(4)" in lightning


def test_module_hook_can_rename_weights_before_they_load(tmp_path: Path) -> None:
    """A common porting use of ``on_load_checkpoint``: the module renamed a layer, and the hook maps
    the old checkpoint's keys to the new names before the weights are loaded."""
    results = []
    for fw in BOTH:
        path = saved_checkpoint(fw, tmp_path)
        base = regression_module(fw)

        class Renamed(base):
            def __init__(self) -> None:
                super().__init__()
                self.head = self.layer
                del self.layer

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(x)

            def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
                state = checkpoint["state_dict"]
                for key in [k for k in state if k.startswith("layer.")]:
                    state["head." + key.removeprefix("layer.")] = state.pop(key)

        model = Renamed()
        out = fw.trainer(tmp_path / fw.name / "t").test(model, data(16), ckpt_path=str(path), verbose=False)
        results.append((out[0]["test_loss"], model.head.weight.detach().clone()))
    (l_loss, l_weight), (e_loss, e_weight) = results
    assert l_loss == pytest.approx(e_loss, rel=1e-6)
    torch.testing.assert_close(l_weight, e_weight)
