"""Atomic writes: a write that fails half-way (a full disk) leaves the previous checkpoint
byte-identical and no temporary file, and the run stops saying what happened; fsspec URLs."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
from resume_kit import ResumeNet, make_loader, quiet, seed_all

from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import CheckpointError, load_checkpoint, new_checkpoint, save_checkpoint
from ember.checkpoint import io as ckpt_io


class _FullDisk:
    """A file whose ``write`` puts half the bytes on disk, then fails as a full disk does."""

    def __init__(self, f: Any, seen: list[list[str]]) -> None:
        self.f = f
        self.seen = seen

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        self.seen.append(sorted(os.listdir(os.path.dirname(self.f.name))))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def fill_the_disk(monkeypatch: pytest.MonkeyPatch, seen: list[list[str]]) -> None:
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real(fd, *args, **kwargs)
        # os.fdopen files have the fd as name: find the path through /proc
        path = os.readlink(f"/proc/self/fd/{fd}")
        return _FullDisk(_Named(f, path), seen)

    monkeypatch.setattr(os, "fdopen", fdopen)


class _Named:
    def __init__(self, f: Any, name: str) -> None:
        self.f, self.name = f, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.f, attr)


def _ckpt(value: float) -> dict:
    return {**new_checkpoint(), "state_dict": {"w": torch.full((256,), value)}}


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.ckpt"
    save_checkpoint(_ckpt(1.0), path)
    before = path.read_bytes()
    seen: list[list[str]] = []
    fill_the_disk(monkeypatch, seen)
    with pytest.raises(OSError, match="No space left on device") as err:
        save_checkpoint(_ckpt(2.0), path)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    # the failure happened with a half-written temporary file next to the target ...
    assert len(seen) == 1 and len(seen[0]) == 2 and "model.ckpt" in seen[0]
    # ... which is gone; the old file is byte-identical and loads
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((256,), 1.0))


def test_a_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_the_disk(monkeypatch, [])
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(_ckpt(2.0), tmp_path / "new.ckpt")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


class _DiskFillsAfter(Callback):
    """From the end of batch ``at`` on, every write fails as on a full disk (snapshots the files first)."""

    def __init__(self, at: int, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.at, self.monkeypatch, self.directory = at, monkeypatch, directory
        self.snapshot: dict[str, bytes] = {}

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.train_engine.state.iteration == self.at:
            self.snapshot = {p.name: p.read_bytes() for p in self.directory.iterdir()}
            fill_the_disk(self.monkeypatch, [])


def test_a_run_stops_with_a_clear_error_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt_dir = tmp_path / "ckpts"
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2, save_top_k=-1, save_last=True)
    full = _DiskFillsAfter(5, monkeypatch, ckpt_dir)
    seed_all()
    trainer = quiet(tmp_path, callbacks=[ckpt, full], max_epochs=2)
    with pytest.raises(OSError) as err:
        trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False))
    monkeypatch.undo()
    message = str(err.value)
    assert "No space left on device" in message
    assert str(ckpt_dir) in message and "step=6" in message
    assert trainer.global_step == 6  # it stopped at the failed save
    files = {p.name: p.read_bytes() for p in ckpt_dir.iterdir()}
    assert files == full.snapshot  # the earlier checkpoints, untouched; no temporary files
    assert "last.ckpt" in files
    for name in files:
        assert load_checkpoint(ckpt_dir / name)["global_step"] in (2, 4)
    # and the run resumes from them
    trainer = quiet(tmp_path, callbacks=[ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2)], max_epochs=2)
    trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False), ckpt_path=ckpt_dir / "last.ckpt")
    assert trainer.global_step == 20


# ---------------------------------------------------------------------------- fsspec


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def test_memory_url_round_trip(memfs: Any) -> None:
    url = "memory://ckpts/run1/model.ckpt"
    save_checkpoint(_ckpt(3.0), url)
    assert ckpt_io.exists(url)
    ckpt = load_checkpoint(url)
    assert torch.equal(ckpt["state_dict"]["w"], torch.full((256,), 3.0))
    save_checkpoint(_ckpt(4.0), url)  # overwrite in place
    assert torch.equal(load_checkpoint(url)["state_dict"]["w"], torch.full((256,), 4.0))
    assert memfs.ls("/ckpts/run1", detail=False) == ["/ckpts/run1/model.ckpt"]  # no temporary objects left


def test_memory_url_failed_move_keeps_the_old_object(memfs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "memory://ckpts/model.ckpt"
    save_checkpoint(_ckpt(1.0), url)
    before = memfs.cat("/ckpts/model.ckpt")

    def broken_mv(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(memfs), "mv", broken_mv)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(_ckpt(2.0), url)
    monkeypatch.undo()
    assert memfs.cat("/ckpts/model.ckpt") == before
    assert memfs.ls("/ckpts", detail=False) == ["/ckpts/model.ckpt"]


def test_memory_url_refuses_garbage_with_the_url_named(memfs: Any) -> None:
    memfs.pipe("/junk.ckpt", b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"memory://junk\.ckpt"):
        load_checkpoint("memory://junk.ckpt")
    with pytest.raises(FileNotFoundError, match=r"memory://missing\.ckpt"):
        load_checkpoint("memory://missing.ckpt")


def test_trainer_saves_resumes_and_keeps_top_k_on_a_memory_url(tmp_path: Path, memfs: Any) -> None:
    ckpt = ModelCheckpoint(dirpath="memory://run/ckpts", monitor="val_loss", save_top_k=2, save_last=True)
    seed_all()
    trainer = quiet(tmp_path, callbacks=[ckpt], max_epochs=3)
    trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False))
    names = sorted(memfs.ls("/run/ckpts", detail=False))
    assert len(names) == 3 and "/run/ckpts/last.ckpt" in names
    assert ckpt.best_model_path.startswith("memory://run/ckpts/")
    assert load_checkpoint(ckpt.best_model_path)["global_step"] > 0
    trainer.save_checkpoint("memory://run/manual.ckpt")
    trainer = quiet(tmp_path, enable_checkpointing=False, max_epochs=4)
    trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False), ckpt_path="memory://run/manual.ckpt")
    assert trainer.global_step == 40


def test_file_url_is_a_local_path(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/a.ckpt"
    save_checkpoint(_ckpt(5.0), url)
    assert (tmp_path / "a.ckpt").exists()
    assert torch.equal(load_checkpoint(url)["state_dict"]["w"], torch.full((256,), 5.0))


def test_last_finds_the_newest_checkpoint_on_a_memory_url(tmp_path: Path, memfs: Any) -> None:
    def ckpt_cb() -> ModelCheckpoint:
        return ModelCheckpoint(dirpath="memory://run/ckpts", every_n_train_steps=4, save_top_k=-1)

    seed_all()
    trainer = quiet(tmp_path, callbacks=[ckpt_cb()], max_epochs=2)
    trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False))
    assert sorted(memfs.ls("/run/ckpts", detail=False))[-1] == "/run/ckpts/epoch=1-step=20.ckpt"
    trainer = quiet(tmp_path, callbacks=[ckpt_cb()], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False), ckpt_path="last")
    assert not [w for w in caught if "no checkpoint found" in str(w.message)]
    assert trainer.global_step == 30


def test_a_new_fit_removes_temporaries_left_by_a_killed_write(tmp_path) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import ember
    from ember.callbacks import ModelCheckpoint

    class Tiny(ember.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.lin(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ckpt_dir = tmp_path / "ck"
    ckpt_dir.mkdir()
    stale = ckpt_dir / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = ckpt_dir / "notes.txt"
    keep.write_text("not ours")
    trainer = ember.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir)], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4))
    assert not stale.exists() and keep.exists()
    assert [p.name for p in ckpt_dir.glob("*.ckpt")] == ["epoch=0-step=2.ckpt"]
