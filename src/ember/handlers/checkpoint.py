"""Engine-level checkpointing with Ignite 0.5's names: ``Checkpoint``, ``ModelCheckpoint``,
``Checkpoint.load_objects``. The file handling (atomic writes, prune after save) is shared with
the Trainer's ``ModelCheckpoint`` callback (:mod:`ember.checkpoint.topk`).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ember.checkpoint import io as ckpt_io
from ember.checkpoint.topk import TopK
from ember.engine.events import Priority


def _check_to_save(to_save: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(to_save, Mapping) or not to_save:
        raise TypeError(f"{what} must be a non-empty dict of name -> object with state_dict(), got {to_save!r}")
    for name, obj in to_save.items():
        if not isinstance(name, str) or not callable(getattr(obj, "state_dict", None)):
            raise TypeError(f"{what}[{name!r}] must have a state_dict() method, got {type(obj).__name__}")
    return to_save


class Checkpoint:
    """Saves ``to_save`` (objects with ``state_dict``) into ``save_handler`` (a directory) each time
    it is called as a handler, keeping the ``n_saved`` best by ``score_function`` (or the latest).

    File names follow Ignite: ``{filename_prefix}_{name}_{global_step}_{score_name}={score}.pt``.
    One object is saved as its own state dict; several as ``{name: state_dict}``.
    """

    priority = Priority.CHECKPOINT
    ext = "pt"

    def __init__(
        self,
        to_save: Mapping[str, Any] | None,
        save_handler: str | os.PathLike,
        filename_prefix: str = "",
        score_function: Callable[[Any], float] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        global_step_transform: Callable[[Any, Any], int] | None = None,
        require_empty: bool = True,
        create_dir: bool = True,
        atomic: bool = True,
    ) -> None:
        self.to_save = _check_to_save(to_save, "to_save") if to_save is not None else None
        if not isinstance(save_handler, (str, os.PathLike)):
            raise TypeError(f"save_handler/dirname must be a directory path, got {save_handler!r}")
        if score_function is not None and not callable(score_function):
            raise TypeError(f"score_function must be callable(engine) -> float, got {score_function!r}")
        if score_name is not None and score_function is None:
            raise ValueError("score_name needs a score_function")
        if global_step_transform is not None and not callable(global_step_transform):
            raise TypeError(f"global_step_transform must be callable(engine, event_name), got {global_step_transform!r}")
        if not atomic:
            raise ValueError("atomic=False is not supported: Ember always writes checkpoints atomically")
        self.dirname = Path(save_handler)
        if create_dir:
            self.dirname.mkdir(parents=True, exist_ok=True)
        elif not self.dirname.is_dir():
            raise ValueError(f"directory {str(self.dirname)!r} does not exist (create_dir=False)")
        if require_empty and any(p.suffix == f".{self.ext}" for p in self.dirname.iterdir()):
            raise ValueError(
                f"files with extension .{self.ext} already exist in {str(self.dirname)!r}; "
                "pass require_empty=False to write there anyway"
            )
        self.filename_prefix = filename_prefix
        self.score_function = score_function
        self.score_name = score_name
        self.global_step_transform = global_step_transform
        self.topk = TopK(-1 if n_saved is None else n_saved, "max")

    @property
    def last_checkpoint(self) -> str | None:
        """Path of the kept file with the highest priority, as in Ignite: the best score with a
        ``score_function`` (``Checkpoint.load_objects(..., handler.last_checkpoint)`` loads the
        best model), else the latest step."""
        saved = self.topk.saved
        order = {p: i for i, p in enumerate(saved)}
        return max(saved, key=lambda p: (saved[p], order[p]), default=None)

    @property
    def saved(self) -> list[tuple[float, str]]:
        return sorted(((s, p) for p, s in self.topk.saved.items()))

    def __call__(self, engine: Any, to_save: Mapping[str, Any] | None = None) -> None:
        objects = _check_to_save(to_save, "to_save") if to_save is not None else self.to_save
        if objects is None:
            raise ValueError("nothing to save: pass to_save to the constructor or to the call")
        if self.global_step_transform is not None:
            step = int(self.global_step_transform(engine, engine.last_event_name))
        else:  # as Ignite: the iteration, whatever the event (EPOCH_COMPLETED(every=2) -> model_20.pt)
            step = int(engine.state.iteration)
        if self.score_function is not None:
            score = self.score_function(engine)
            if not isinstance(score, numbers.Number):
                raise TypeError(f"score_function must return a number, got {type(score).__name__}")
            priority = float(score)
        else:
            score, priority = None, float(step)
        if not self.topk.accepts(priority):
            return
        name = next(iter(objects)) if len(objects) == 1 else "checkpoint"
        parts = [p for p in (self.filename_prefix, name) if p]
        if score is None:
            suffix = str(step)
        else:
            shown = str(score) if isinstance(score, numbers.Integral) else f"{score:.4f}"
            suffix = f"{self.score_name}={shown}" if self.score_name else shown
            if self.global_step_transform is not None:
                suffix = f"{step}_{suffix}"
        filename = "_".join([*parts, suffix]) + f".{self.ext}"
        payload = next(iter(objects.values())).state_dict() if len(objects) == 1 else {k: o.state_dict() for k, o in objects.items()}
        path = str(self.dirname / filename)
        self.topk.save(path, priority, lambda: ckpt_io.save_object(payload, path))

    @staticmethod
    def load_objects(to_load: Mapping[str, Any], checkpoint: Any, strict: bool = True) -> None:
        """Load ``checkpoint`` (a dict, or a path read with ``weights_only=True``) into ``to_load``."""
        to_load = _check_to_save(to_load, "to_load")
        for name, obj in to_load.items():
            if not callable(getattr(obj, "load_state_dict", None)):
                raise TypeError(f"to_load[{name!r}] has no load_state_dict()")
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = ckpt_io.load_object(checkpoint)
        if not isinstance(checkpoint, Mapping):
            raise TypeError(f"checkpoint must be a dict or a path, got {type(checkpoint).__name__}")
        if len(to_load) == 1:
            (name, obj), = to_load.items()
            state = checkpoint[name] if name in checkpoint else checkpoint
            _load(obj, state, strict)
            return
        missing = [k for k in to_load if k not in checkpoint]
        if missing:
            raise KeyError(f"checkpoint has no entries for {missing}; it holds {sorted(checkpoint)}")
        for name, obj in to_load.items():
            _load(obj, checkpoint[name], strict)

    def state_dict(self) -> dict[str, Any]:
        return {"saved": self.topk.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.topk.load_state_dict(state["saved"])


def _load(obj: Any, state: Any, strict: bool) -> None:
    import torch

    if isinstance(obj, torch.nn.Module):
        obj.load_state_dict(state, strict=strict)
    else:
        obj.load_state_dict(state)


class ModelCheckpoint(Checkpoint):
    """Ignite's ``ModelCheckpoint``: used as
    ``engine.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": model})`` or called as
    ``handler(engine, {"model": model})``."""

    def __init__(
        self,
        dirname: str | os.PathLike,
        filename_prefix: str = "",
        score_function: Callable[[Any], float] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        atomic: bool = True,
        require_empty: bool = True,
        create_dir: bool = True,
        global_step_transform: Callable[[Any, Any], int] | None = None,
    ) -> None:
        super().__init__(
            None, dirname, filename_prefix, score_function, score_name, n_saved,
            global_step_transform, require_empty, create_dir, atomic,
        )  # fmt: skip
