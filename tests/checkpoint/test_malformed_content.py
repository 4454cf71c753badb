"""Malformed checkpoints, generated: a real checkpoint with one entry at a time replaced by a value of
the wrong type (a str, a list, a dict, None, a float, a negative int) or removed, at every level of
the layout. Each is loaded the three ways a user loads a file (``load_checkpoint``,
``Module.load_from_checkpoint``, ``Trainer.fit(ckpt_path=...)``): each either works or raises a
``CheckpointError``/``ValueError`` that names the file, never an ``AttributeError``, ``KeyError`` or
``TypeError`` from the middle of a restore (issue 13, item 4)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
from scripted import Scripted, data, trainer

from ember.callbacks import EarlyStopping, ModelCheckpoint
from ember.checkpoint import CheckpointError, load_checkpoint
from ember.loggers import CSVLogger

VALUES = [5.0, 3.0, 4.0, 1.0, 2.0]
REMOVED = object()
WRONG = ["oops", ["oops"], {"oops": 1}, None, 1.5, -1, REMOVED]

# Left out of the generation: the hyperparameters of an optimizer's param group other than "params"
# and "lr" (which keys and types an optimizer needs is the optimizer's business), and removals that
# make a checkpoint of another model rather than a malformed one (a weight, a list item).
def _generated(path: tuple[Any, ...], wrong: Any) -> bool:
    # removing an item of a list changes a count (of optimizers, of an optimizer's parameters): a
    # checkpoint of another model or optimizer, reported by torch's own load_state_dict
    if wrong is REMOVED and (isinstance(path[-1], int) or (len(path) == 2 and path[0] == "state_dict")):
        return False
    if len(path) >= 4 and path[0] == "optimizer_states" and path[2] == "param_groups":
        return len(path) == 4 or path[4] in ("params", "lr")
    return True


class Momentum(Scripted):
    """SGD with momentum, so that the optimizer has per-parameter state."""

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)


def run_trainer(root: Path) -> Any:
    callbacks = [
        ModelCheckpoint(dirpath=root / "c", monitor="val_loss", save_top_k=2, save_last=True),
        EarlyStopping(monitor="val_loss", patience=5),
    ]
    return trainer(root, callbacks=callbacks, logger=CSVLogger(root), max_epochs=3)


def sites(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every entry of the nested dicts and (short) lists, depth first."""
    if path:
        yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from sites(value, (*path, key))
    elif isinstance(obj, (list, tuple)) and len(obj) <= 8:
        for i, value in enumerate(obj):
            yield from sites(value, (*path, i))


def replaced(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``obj`` with the entry at ``path`` set to ``value`` (removed: ``REMOVED``)."""
    head, rest = path[0], path[1:]
    items: Any = dict(obj) if isinstance(obj, dict) else list(obj)
    if rest:
        items[head] = replaced(obj[head], rest, value)
    elif value is REMOVED:
        del items[head]
    else:
        items[head] = value
    return tuple(items) if isinstance(obj, tuple) else items


def problem(path: Path, action: Callable[[], Any]) -> str | None:
    """None if ``action`` works or fails as it should (naming ``path``); else what went wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action()
    except (CheckpointError, ValueError) as err:
        return None if str(path) in str(err) else f"{type(err).__name__} without the file name: {err}"
    except Exception as err:  # what this test looks for: anything else leaking out
        return f"{type(err).__name__}: {err}"
    return None


def test_every_malformed_checkpoint_fails_naming_the_file(tmp_path: Path, capsys: Any) -> None:
    source = tmp_path / "source"
    run = run_trainer(source)
    run.fit(Momentum(VALUES), data(), data())
    original = torch.load(source / "c" / "last.ckpt", weights_only=True)
    assert original["optimizer_states"][0]["state"], "the optimizer has per-parameter state to corrupt"
    variants = [(p, v) for p in sites(original) for v in WRONG if _generated(p, v)]
    assert len(variants) > 400

    failures, refused_on_load, loaded = [], 0, 0
    for i, (entry, wrong) in enumerate(variants):
        path = tmp_path / "variants" / f"bad-{i}.ckpt"
        path.parent.mkdir(exist_ok=True)
        torch.save(replaced(original, entry, wrong), path)
        what = f"{'removed' if wrong is REMOVED else repr(wrong)} at {entry}"
        if (p := problem(path, lambda path=path: load_checkpoint(path))) is not None:
            failures.append(f"load_checkpoint, {what}: {p}")
            continue
        try:
            load_checkpoint(path)
        except (CheckpointError, ValueError):
            refused_on_load += 1
            continue
        loaded += 1
        if (p := problem(path, lambda path=path: Momentum.load_from_checkpoint(path))) is not None:
            failures.append(f"load_from_checkpoint, {what}: {p}")
        resume = lambda path=path: run_trainer(source).fit(Momentum(VALUES), data(), data(), ckpt_path=path)  # noqa: E731
        if (p := problem(path, resume)) is not None:
            failures.append(f"fit(ckpt_path=...), {what}: {p}")
    capsys.readouterr()
    assert not failures, f"{len(failures)} of {len(variants)} malformed checkpoints:\n" + "\n".join(failures)
    assert refused_on_load > 300 and loaded > 20  # both halves were exercised


def test_the_checked_layout_is_the_current_format() -> None:
    """Changing the format (FORMAT_VERSION) means describing its layout in ember.checkpoint.schema."""
    from ember.checkpoint import FORMAT_VERSION
    from ember.checkpoint.schema import LAYOUT_VERSION

    assert LAYOUT_VERSION == FORMAT_VERSION
