"""A checkpoint is data from somewhere else: its callback bookkeeping (the top-k files, the files a
killed run was about to delete, last.ckpt) can name any path. Nothing read from it may make Ember
delete, overwrite or create a file outside the callback's own directory, or one that Ember's own
naming would not have produced there (issue 13, item 1)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
from scripted import Scripted, data, trainer

from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import io as ckpt_io
from ember.checkpoint.topk import TopK

VALUES = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0]
STATE_KEY = ModelCheckpoint(monitor="val_loss").state_key  # Lightning's: with the save triggers


def precious(path: Path, text: str = "do not delete") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def downloaded_checkpoint(tmp_path: Path, victim_dir: Path, targets: list[str]) -> Path:
    """A real checkpoint from another run, edited as an attacker would: its ModelCheckpoint state
    claims the victim's default checkpoint directory and names ``targets`` as its top-k files, as the
    files it was about to delete, and as its best/last files."""
    source = ModelCheckpoint(dirpath=tmp_path / "publisher", monitor="val_loss", save_top_k=1)
    trainer(tmp_path / "publisher-root", callbacks=[source], max_epochs=1).fit(Scripted(VALUES), data(), data())
    checkpoint = torch.load(source.best_model_path, weights_only=True)
    state = checkpoint["callbacks"][STATE_KEY]
    state["dirpath"] = str(victim_dir)
    state["topk"]["saved"] = {t: 100.0 + i for i, t in enumerate(targets)}  # all worse than any real score
    state["dropping"] = list(targets)
    state["best_model_path"] = targets[0]
    state["kth_best_model_path"] = targets[-1]
    state["last_model_path"] = targets[0]
    path = tmp_path / "downloads" / "pretrained.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    return path


def test_a_downloaded_checkpoint_cannot_delete_files_outside_the_run(tmp_path: Path) -> None:
    root = tmp_path / "victim"
    victim_dir = root / "checkpoints"  # where a default ModelCheckpoint writes with logger=False
    victim_dir.mkdir(parents=True)
    home = precious(tmp_path / "precious.txt")
    own_name_outside = precious(tmp_path / "elsewhere" / "epoch=9-step=99.ckpt")  # Ember's naming, another folder
    symlinked = precious(tmp_path / "linked" / "epoch=8-step=98.ckpt")
    os.symlink(symlinked.parent, victim_dir / "link")  # inside the directory by name, outside once resolved
    stranger_here = precious(victim_dir / "notes.txt")  # in the directory, but not a name Ember gives
    escape = precious(root / "epoch=7-step=97.ckpt")
    targets = [
        str(home),
        str(own_name_outside),
        str(victim_dir / "link" / "epoch=8-step=98.ckpt"),
        str(stranger_here),
        str(victim_dir / ".." / "epoch=7-step=97.ckpt"),
    ]
    ckpt = downloaded_checkpoint(tmp_path, victim_dir, targets)

    cb = ModelCheckpoint(monitor="val_loss", save_top_k=1)  # a default fine-tuning run: dirpath from the trainer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(root, callbacks=[cb], max_epochs=4).fit(Scripted(VALUES), data(), data(), ckpt_path=ckpt)
    for path in (home, own_name_outside, symlinked, stranger_here, escape):
        assert path.read_text() == "do not delete", path
    messages = [str(w.message) for w in caught]
    for target in targets:  # each refused path is named, with the field it came from
        assert any(repr(target) in m and "'dropping'" in m for m in messages), target
        assert any(repr(target) in m and "topk.saved" in m for m in messages), target
    # the run's own bookkeeping is sane: only its own files, pruned to k=1
    assert sorted(p.name for p in victim_dir.iterdir() if p.suffix == ".ckpt") == ["epoch=3-step=16.ckpt"]
    assert cb.best_model_path == str(victim_dir / "epoch=3-step=16.ckpt")

    # a later save (a second fine-tuning run from the same file, more epochs) still leaves them alone
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = trainer(root, callbacks=[cb], max_epochs=6)
        tr.fit(Scripted(VALUES), data(), data(), ckpt_path=ckpt)
        tr.save_checkpoint(victim_dir / "manual.ckpt")
    for path in (home, own_name_outside, symlinked, stranger_here, escape):
        assert path.read_text() == "do not delete", path


def test_the_stored_directory_is_never_adopted(tmp_path: Path) -> None:
    """A callback with no directory of its own yet does not take the checkpoint's."""
    cb = ModelCheckpoint(monitor="val_loss")
    cb.load_state_dict({"dirpath": str(tmp_path / "theirs"), "topk": {"saved": {}}, "dropping": []})
    assert cb.dirpath is None and cb.topk.directory is None


def test_topk_without_a_directory_checks_restored_paths_before_deleting(tmp_path: Path) -> None:
    """The Engine-level Checkpoint handler's TopK knows no directory: a restored path is checked
    against the directory and extension of the next file it saves, and a foreign one is never deleted."""
    outside = precious(tmp_path / "precious.pt")
    own_dir = tmp_path / "run"
    own_dir.mkdir()
    own_old = precious(own_dir / "model_1.pt", "old")
    topk = TopK(1, "max")
    topk.load_state_dict({"saved": {str(outside): 0.0, str(own_old): 1.0}})
    new = str(own_dir / "model_2.pt")
    with pytest.warns(UserWarning, match="precious.pt"):
        dropped = topk.save(new, 2.0, lambda: ckpt_io.save_object({"v": 1}, new))
    assert outside.read_text() == "do not delete"
    assert dropped == [str(own_old)] and not own_old.exists()  # its own old file is pruned as before


def test_topk_with_a_directory_refuses_foreign_paths_on_load(tmp_path: Path) -> None:
    """Its own files are kept, also when its directory is a symlink (what a real resume needs)."""
    (tmp_path / "real").mkdir()
    own_dir = tmp_path / "run"
    os.symlink(tmp_path / "real", own_dir)
    outside = precious(tmp_path / "precious.ckpt")
    mine = precious(own_dir / "a.ckpt", "mine")
    topk = TopK(2, "max", directory=str(own_dir), name_ok=lambda name: name.endswith(".ckpt"))
    with pytest.warns(UserWarning, match=r"precious\.ckpt.*'saved'"):
        topk.load_state_dict({"saved": {str(outside): 1.0, str(mine): 2.0, str(own_dir / "b.txt"): 3.0}})
    assert topk.saved == {str(mine): 2.0}


@pytest.mark.parametrize("bad", [["not", "a", "dict"], "x", None])
def test_topk_state_of_the_wrong_type_is_an_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="path -> score"):
        TopK(1, "max").load_state_dict({"saved": bad})
