"""``ModelCheckpoint``: top-k by a monitored metric, file names, save_last, intervals, pruning
order, bookkeeping across a resume, and the Trainer's default checkpointing."""

from __future__ import annotations

import datetime
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from scripted import Scripted, data, trainer

import ember.callbacks.model_checkpoint as mc_module
from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import io as ckpt_io
from ember.checkpoint import load_checkpoint

VALUES = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0]  # best (min): epoch 3, then 4, then 1


def ckpt_names(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir())


def test_public_names() -> None:
    """The issue names them ember.callbacks.ModelCheckpoint / EarlyStopping."""
    from ember import callbacks

    assert callbacks.ModelCheckpoint is ModelCheckpoint
    assert callbacks.EarlyStopping.__module__ == "ember.callbacks.early_stopping"


def test_keeps_the_two_best_with_their_names_and_scores(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss", mode="min", save_top_k=2, save_last=True)
    tr = trainer(tmp_path, callbacks=[cb], max_epochs=6)
    tr.fit(Scripted(VALUES), data(), data())
    # 4 batches per epoch: epoch e ends at step 4 * (e + 1)
    assert ckpt_names(tmp_path / "c") == ["epoch=3-step=16.ckpt", "epoch=4-step=20.ckpt", "last.ckpt"]
    assert cb.best_model_path == str(tmp_path / "c" / "epoch=3-step=16.ckpt")
    assert float(cb.best_model_score) == 1.0
    assert {k: float(v) for k, v in cb.best_k_models.items()} == {
        str(tmp_path / "c" / "epoch=3-step=16.ckpt"): 1.0,
        str(tmp_path / "c" / "epoch=4-step=20.ckpt"): 2.0,
    }
    assert cb.kth_best_model_path == str(tmp_path / "c" / "epoch=4-step=20.ckpt")
    assert cb.last_model_path == str(tmp_path / "c" / "last.ckpt")
    assert load_checkpoint(cb.last_model_path)["global_step"] == 24
    assert load_checkpoint(cb.best_model_path)["global_step"] == 16


def test_mode_max_and_metric_formatting(tmp_path: Path) -> None:
    cb = ModelCheckpoint(
        dirpath=tmp_path, monitor="val_acc", mode="max", save_top_k=2,
        filename="model-{epoch:02d}-{val_acc:.3f}", auto_insert_metric_name=False,
    )  # fmt: skip
    tr = trainer(tmp_path / "root", callbacks=[cb], max_epochs=6)
    tr.fit(Scripted(VALUES), data(), data())
    assert ckpt_names(tmp_path) == ["model-03--1.000.ckpt", "model-04--2.000.ckpt"]
    assert float(cb.best_model_score) == -1.0


def test_auto_inserted_metric_names(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", filename="{epoch}-{val_loss:.3f}", save_top_k=1)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=2).fit(Scripted(VALUES), data(), data())
    assert ckpt_names(tmp_path) == ["epoch=1-val_loss=3.000.ckpt"]


def test_the_new_file_is_in_place_before_the_old_one_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str, list[str]]] = []
    real_save, real_remove = ckpt_io.save_object, ckpt_io.remove

    def save_object(obj: Any, path: Any) -> None:
        real_save(obj, path)
        events.append(("saved", Path(path).name, ckpt_names(tmp_path)))

    def remove(path: Any) -> None:
        events.append(("removing", Path(path).name, ckpt_names(tmp_path)))
        real_remove(path)

    monkeypatch.setattr(ckpt_io, "save_object", save_object)
    monkeypatch.setattr(ckpt_io, "remove", remove)
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=4).fit(Scripted(VALUES), data(), data())
    assert [(e[0], e[1]) for e in events] == [
        ("saved", "epoch=0-step=4.ckpt"),
        ("saved", "epoch=1-step=8.ckpt"),
        ("removing", "epoch=0-step=4.ckpt"),  # 3.0 beat 5.0
        ("saved", "epoch=3-step=16.ckpt"),  # epoch 2 (4.0) was not saved at all
        ("removing", "epoch=1-step=8.ckpt"),
    ]
    for kind, name, listing in events:
        if kind == "removing":  # at the moment of each deletion, its replacement is already on disk
            assert len(listing) == 2 and name in listing
    assert ckpt_names(tmp_path) == ["epoch=3-step=16.ckpt"]


def test_every_n_train_steps_without_monitor_keeps_all(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=2).fit(Scripted(VALUES), data(), data())
    assert ckpt_names(tmp_path) == [f"epoch={(s - 1) // 4}-step={s}.ckpt" for s in (3, 6)]


def test_without_monitor_the_latest_is_kept(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=3).fit(Scripted(VALUES), data(), data())
    assert ckpt_names(tmp_path) == ["epoch=2-step=12.ckpt"]
    assert cb.best_model_path == str(tmp_path / "epoch=2-step=12.ckpt")


def test_every_n_epochs(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=5).fit(Scripted(VALUES), data(), data())
    assert ckpt_names(tmp_path) == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]


def test_train_time_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    class Tick(Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            clock[0] += 1.0  # every batch takes "one second"

    monkeypatch.setattr(mc_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    cb = ModelCheckpoint(dirpath=tmp_path, train_time_interval=datetime.timedelta(seconds=3), save_top_k=-1)
    trainer(tmp_path / "root", callbacks=[cb, Tick()], max_epochs=2).fit(Scripted(VALUES), data(), data())
    assert ckpt_names(tmp_path) == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]


def test_a_monitor_that_was_never_logged_lists_the_logged_metrics(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_los")
    with pytest.raises(ValueError, match="val_los") as err:
        trainer(tmp_path / "root", callbacks=[cb], max_epochs=1).fit(Scripted(VALUES), data(), data())
    for name in ("val_loss", "val_acc", "train_loss"):
        assert name in str(err.value)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="save_top_k"):
        ModelCheckpoint(save_top_k=3)  # no monitor to rank by
    with pytest.raises(ValueError, match="save_top_k"):
        ModelCheckpoint(monitor="x", save_top_k=-2)
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint(monitor="x", mode="best")
    with pytest.raises(ValueError, match="every_n_train_steps"):
        ModelCheckpoint(every_n_train_steps=-1)


def test_top_k_bookkeeping_continues_across_a_resume(tmp_path: Path) -> None:
    class CrashAfterEpoch(Callback):  # after epoch 2's checkpoint (ModelCheckpoint acts last in on_train_epoch_end)
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if trainer.current_epoch == 3:
                raise RuntimeError("crash")

    ckpt_dir = tmp_path / "c"
    cb = ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=2, save_last=True)
    with pytest.raises(RuntimeError, match="crash"):
        trainer(tmp_path, callbacks=[cb, CrashAfterEpoch()], max_epochs=6).fit(Scripted(VALUES), data(), data())
    assert ckpt_names(ckpt_dir) == ["epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt", "last.ckpt"]
    cb = ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=2, save_last=True)
    trainer(tmp_path, callbacks=[cb], max_epochs=6).fit(Scripted(VALUES), data(), data(), ckpt_path="last")
    # the files of the first run were pruned by the second: exactly k best over the whole run
    assert ckpt_names(ckpt_dir) == ["epoch=3-step=16.ckpt", "epoch=4-step=20.ckpt", "last.ckpt"]
    assert cb.best_model_path == str(ckpt_dir / "epoch=3-step=16.ckpt")


def test_the_trainer_checkpoints_by_default(tmp_path: Path) -> None:
    tr = trainer(tmp_path, max_epochs=2)
    tr.fit(Scripted(VALUES), data(), data())
    found = sorted(tmp_path.rglob("*.ckpt"))
    assert [p.name for p in found] == ["epoch=1-step=8.ckpt"]
    assert tr.checkpoint_callback is not None and tr.checkpoint_callback.best_model_path == str(found[0])
    tr = trainer(tmp_path / "with-logger", max_epochs=1, logger=True)
    tr.fit(Scripted(VALUES), data(), data())
    assert [p.relative_to(tmp_path / "with-logger").as_posix() for p in (tmp_path / "with-logger").rglob("*.ckpt")] == [
        "ember_logs/version_0/checkpoints/epoch=0-step=4.ckpt"
    ]


def test_enable_checkpointing_false_writes_nothing(tmp_path: Path) -> None:
    tr = trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    tr.fit(Scripted(VALUES), data(), data())
    assert list(tmp_path.rglob("*.ckpt")) == []
    assert tr.checkpoint_callback is None
    with pytest.raises(ValueError, match="enable_checkpointing=False"):
        trainer(tmp_path, enable_checkpointing=False, callbacks=[ModelCheckpoint()])


def test_save_checkpoint_on_demand_and_weights_only(tmp_path: Path) -> None:
    model = Scripted(VALUES)
    tr = trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    tr.fit(model, data(), data())
    tr.save_checkpoint(tmp_path / "full.ckpt")
    tr.save_checkpoint(tmp_path / "weights.ckpt", weights_only=True)
    full = torch.load(tmp_path / "full.ckpt", weights_only=True)
    weights = torch.load(tmp_path / "weights.ckpt", weights_only=True)
    assert {"optimizer_states", "loops", "rng_states", "lr_schedulers"} <= set(full)
    assert not {"optimizer_states", "loops", "rng_states", "lr_schedulers", "callbacks"} & set(weights)
    assert weights["hyper_parameters"] == {"values": VALUES, "lr": 0.05}
    for ckpt in (full, weights):
        assert ckpt["global_step"] == 8
        assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in model.state_dict().items())
    loaded = Scripted.load_from_checkpoint(tmp_path / "weights.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert (tmp_path / "weights.ckpt").stat().st_size < (tmp_path / "full.ckpt").stat().st_size
    with pytest.raises(RuntimeError, match="no model"):
        trainer(tmp_path).save_checkpoint(tmp_path / "none.ckpt")


def test_save_weights_only_callback(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=1).fit(Scripted(VALUES), data(), data())
    ckpt = load_checkpoint(cb.best_model_path)
    assert "state_dict" in ckpt and "optimizer_states" not in ckpt


def test_an_existing_file_of_another_run_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "epoch=0-step=4.ckpt").write_bytes(b"someone else's")
    cb = ModelCheckpoint(dirpath=tmp_path)
    trainer(tmp_path / "root", callbacks=[cb], max_epochs=1).fit(Scripted(VALUES), data(), data())
    assert (tmp_path / "epoch=0-step=4.ckpt").read_bytes() == b"someone else's"
    assert cb.best_model_path == str(tmp_path / "epoch=0-step=4-v1.ckpt")


def test_files_a_killed_run_was_about_to_delete_go_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Killed(BaseException):
        pass

    def killed_while_removing(path: Any) -> None:
        raise Killed  # the process dies after the new file is in place, before the old one is deleted

    ckpt_dir = tmp_path / "c"
    monkeypatch.setattr(ckpt_io, "remove", killed_while_removing)
    cb = ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=1)
    with pytest.raises(Killed):
        trainer(tmp_path, callbacks=[cb], max_epochs=6).fit(Scripted(VALUES), data(), data())
    monkeypatch.undo()
    assert ckpt_names(ckpt_dir) == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]  # one too many, never one too few
    cb = ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=1)
    trainer(tmp_path, callbacks=[cb], max_epochs=6).fit(Scripted(VALUES), data(), data(), ckpt_path="last")
    # epoch 0's file went; epoch 1's is the one the run resumed from ("last"), which, as in
    # Lightning, is never deleted even when it falls out of the top k
    assert ckpt_names(ckpt_dir) == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]
    assert cb.best_model_path == str(ckpt_dir / "epoch=3-step=16.ckpt")
