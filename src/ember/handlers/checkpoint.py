"""Engine-level checkpointing with Ignite 0.5's API: ``Checkpoint``, ``Checkpoint.load_objects`` and
the ``SAVED_CHECKPOINT`` event (``ModelCheckpoint`` is in :mod:`ember.handlers.model_checkpoint`, the
save handlers in :mod:`ember.handlers.savers`).

Each call (usually on an event) computes a priority — ``score_function(engine)``, or else the global
step (``global_step_transform(engine, event)``, or else the iteration) — and saves the objects'
state dicts when the priority is among the ``n_saved`` best kept so far; the kept checkpoint with
the lowest priority then goes (the earliest of equals). Files are named as Ignite names them::

    {filename_prefix}_{name}_{global_step}_{score_name}={score}.pt    (parts left out when unused)

where ``name`` is the one key of ``to_save``, or ``checkpoint`` for several (then the file holds
``{key: state_dict}``). The kept files are tracked by :class:`~ember.checkpoint.topk.TopK` (shared
with the Trainer's ``ModelCheckpoint``).

Where Ember is stricter than Ignite: a new checkpoint is written before the one it displaces is
removed (so a crash never leaves fewer than ``n_saved``), a file is overwritten in place rather than
removed and written again, a NaN score is never saved, and a loaded ``state_dict`` keeps only the
entries that name files this handler could have written directly inside its directory (the others
are dropped with a warning: nothing it holds can make a removal reach elsewhere).
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, NamedTuple

from ember.checkpoint.topk import TopK
from ember.engine.events import EventEnum, Events, Priority
from ember.handlers.objects import check_objects, load_objects, state_dicts
from ember.handlers.savers import BaseSaveHandler, DiskSaver, check_filename


class CheckpointEvents(EventEnum):
    """Fired on the engine a :class:`Checkpoint` runs on, after each save."""

    SAVED_CHECKPOINT = "saved_checkpoint"


class Item(NamedTuple):
    """One kept checkpoint: its ``priority`` (score or step) and ``filename``."""

    priority: float
    filename: str


class Checkpoint:
    """Save ``to_save`` (objects with ``state_dict``, possibly in nested dicts/lists) through
    ``save_handler``, keeping the ``n_saved`` best by ``score_function`` (else the latest).

    Args:
        to_save: ``{name: object}``.
        save_handler: a :class:`DiskSaver`, a directory (made into ``DiskSaver(dir, create_dir=True,
            require_empty=True)``), a :class:`BaseSaveHandler`, or any callable
            ``(checkpoint, filename[, metadata])``.
        filename_prefix: first part of the file names.
        score_function: ``engine -> number``, higher is better; with only ``score_name``, the
            metric ``engine.state.metrics[score_name]``.
        score_name: shown in the file names as ``{score_name}={score}``.
        n_saved: how many to keep (None: all).
        global_step_transform: ``(engine, event) -> int`` shown in the file names (for example
            :func:`~ember.handlers.global_step_from_engine`).
        filename_pattern: a ``str.format`` pattern over ``filename_prefix``, ``name``, ``global_step``,
            ``score_name``, ``score`` and ``ext``.
        include_self: store this handler's ``state_dict()`` in each checkpoint under ``"checkpointer"``.
        greater_or_equal: a priority equal to the lowest kept one replaces it.
        save_on_rank: the process that writes (for a directory given as ``save_handler``).

    Example::

        to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
        handler = Checkpoint(to_save, DiskSaver("checkpoints"), n_saved=2,
                             global_step_transform=global_step_from_engine(trainer))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
        ...
        Checkpoint.load_objects(to_save, handler.last_checkpoint)
    """

    #: handlers run after the metrics and user handlers of the same event
    ember_priority = Priority.CHECKPOINT
    SAVED_CHECKPOINT = CheckpointEvents.SAVED_CHECKPOINT
    Item = Item

    def __init__(
        self,
        to_save: Mapping[str, Any],
        save_handler: str | os.PathLike | Callable | BaseSaveHandler,
        filename_prefix: str = "",
        score_function: Callable[[Any], float] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        global_step_transform: Callable[[Any, Any], int] | None = None,
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
        save_on_rank: int = 0,
    ) -> None:
        check_objects(to_save, "state_dict", "to_save")
        if include_self:
            if not isinstance(to_save, MutableMapping):
                raise TypeError(f"include_self=True needs a mutable to_save (a dict), got {type(to_save).__name__}")
            if "checkpointer" in to_save:
                raise ValueError(
                    "to_save cannot have a key 'checkpointer' with include_self=True: that is where it goes"
                )
        if isinstance(save_handler, (str, os.PathLike)):
            save_handler = DiskSaver(save_handler, create_dir=True, save_on_rank=save_on_rank)
        elif not callable(save_handler):
            raise TypeError(
                "save_handler must be a directory, a DiskSaver, a BaseSaveHandler or a callable "
                f"(checkpoint, filename, metadata), got {type(save_handler).__name__}"
            )
        if not isinstance(filename_prefix, str):
            raise TypeError(f"filename_prefix must be a string, got {filename_prefix!r}")
        if score_function is not None and not callable(score_function):
            raise TypeError(f"score_function must be callable(engine) -> number, got {score_function!r}")
        if global_step_transform is not None and not callable(global_step_transform):
            raise TypeError(f"global_step_transform must be callable(engine, event), got {global_step_transform!r}")
        if n_saved is not None and (isinstance(n_saved, bool) or not isinstance(n_saved, int) or n_saved < 1):
            raise ValueError(f"n_saved must be a positive integer or None (keep all), got {n_saved!r}")
        if filename_pattern is not None and not isinstance(filename_pattern, str):
            raise TypeError(f"filename_pattern must be a str.format pattern, got {filename_pattern!r}")
        self.to_save = to_save
        self.save_handler = save_handler
        self.filename_prefix = filename_prefix
        self.score_name = score_name
        if score_function is None and score_name is not None:
            score_function = self.get_default_score_fn(score_name)
        self.score_function = score_function
        self.n_saved = n_saved
        self.ext = "pt"
        self.global_step_transform = global_step_transform
        self.filename_pattern = filename_pattern
        self.include_self = include_self
        self.greater_or_equal = greater_or_equal
        self.save_on_rank = save_on_rank
        self._saves_with_metadata = _takes_metadata(save_handler)
        # key (a path with a DiskSaver, else the file name) -> priority, in save order; with a DiskSaver the
        # top-k knows the directory, and keeps restored entries only for files this handler could have written
        k = -1 if n_saved is None else n_saved
        if isinstance(save_handler, DiskSaver):
            self._topk = TopK(k, "max", directory=str(save_handler.dirname), name_ok=self._own_name)
        else:
            self._topk = TopK(k, "max")

    def _own_name(self, name: str) -> bool:
        """Whether this handler could have named a file ``name``: not hidden, with its extension when
        its pattern ends with it."""
        pattern = self.filename_pattern or ".{ext}"
        return not name.startswith(".") and (not pattern.endswith(".{ext}") or name.endswith(f".{self.ext}"))

    # ------------------------------------------------------------------ the kept files

    def _key(self, filename: str) -> str:
        if isinstance(self.save_handler, DiskSaver):
            return str(self.save_handler.path(filename))
        return filename

    def _filename(self, key: str) -> str:
        return Path(key).name if isinstance(self.save_handler, DiskSaver) else key

    @property
    def saved(self) -> list[Item]:
        """The kept checkpoints, lowest priority first (Ignite's ``_saved``)."""
        order = {key: i for i, key in enumerate(self._topk.saved)}
        ranked = sorted(self._topk.saved.items(), key=lambda kv: (kv[1], order[kv[0]]))
        return [Item(p, self._filename(k)) for k, p in ranked]

    @property
    def last_checkpoint(self) -> Path | str | None:
        """The kept checkpoint with the highest priority (the latest of equals): a ``Path`` in the
        directory with a :class:`DiskSaver`, else the file name; None before the first save."""
        saved = self.saved
        if not saved:
            return None
        if isinstance(self.save_handler, DiskSaver):
            return self.save_handler.dirname / saved[-1].filename
        return saved[-1].filename

    def reset(self) -> None:
        """Forget the kept checkpoints (their files stay): the next run starts a new list."""
        self._topk.saved = {}

    # ------------------------------------------------------------------ saving

    def __call__(self, engine: Any, *args: Any, **kwargs: Any) -> None:
        engine.register_events(*CheckpointEvents)  # no-op when registered
        global_step = None
        if self.global_step_transform is not None:
            global_step = self.global_step_transform(engine, engine.last_event_name)
        if self.score_function is not None:
            priority = self.score_function(engine)
            if not isinstance(priority, numbers.Number):
                raise ValueError(f"score_function must return a number, got {type(priority).__name__}")
        else:
            if global_step is None:
                global_step = engine.state.get_event_attrib_value(Events.ITERATION_COMPLETED)
            priority = global_step
        if isinstance(priority, float) and math.isnan(priority):
            return  # never kept (Ignite keeps it while fewer than n_saved are kept)
        if not self._accepts(priority):
            return
        checkpoint = state_dicts(self.to_save, self.save_on_rank)
        name = "checkpoint"
        if len(checkpoint) == 1:
            (name,) = checkpoint
            checkpoint = checkpoint[name]
        filename = self.filename_for(name, priority, global_step)
        metadata = {
            "basename": f"{self.filename_prefix}_{name}" if self.filename_prefix else name,
            "score_name": self.score_name,
            "priority": priority,
        }
        self._save(checkpoint, filename, metadata, priority)
        engine.fire_event(CheckpointEvents.SAVED_CHECKPOINT)

    def _lowest(self) -> str:
        """The kept checkpoint that goes first: the lowest priority, the earliest saved of equals (Ignite's rule)."""
        saved = self._topk.saved
        order = {key: i for i, key in enumerate(saved)}
        return min(saved, key=lambda key: (saved[key], order[key]))

    def _accepts(self, priority: float) -> bool:
        topk = self._topk
        if topk.k == -1 or len(topk.saved) < topk.k:
            return True
        lowest = topk.saved[self._lowest()]
        return priority >= lowest if self.greater_or_equal else priority > lowest

    def filename_for(self, name: str, priority: float, global_step: int | None) -> str:
        """The file name of a checkpoint of ``name`` (see the module doc), checked to stay in the directory."""
        pattern = self.filename_pattern
        if pattern is None:
            pattern = self.setup_filename_pattern(
                with_prefix=bool(self.filename_prefix),
                with_score=self.score_function is not None,
                with_score_name=self.score_name is not None,
                with_global_step=global_step is not None,
            )
        score = f"{priority}" if isinstance(priority, numbers.Integral) else f"{priority:.4f}"
        return check_filename(
            pattern.format(
                filename_prefix=self.filename_prefix, ext=self.ext, name=name, score_name=self.score_name,
                score=score if self.score_function is not None else None, global_step=global_step,
            )
        )  # fmt: skip

    def _save(self, checkpoint: Any, filename: str, metadata: dict[str, Any], priority: float) -> None:
        """Book ``filename``, write it, then remove what it displaces (undoing the booking if the write fails)."""
        key = self._key(filename)
        saved = self._topk.saved
        before = dict(saved)
        dropped = []
        if key in saved:  # the same file again: overwritten, nothing else goes
            del saved[key]
        elif self._topk.k != -1 and len(saved) >= self._topk.k:
            dropped.append(self._lowest())
            del saved[dropped[0]]
        saved[key] = priority
        if self.include_self:
            checkpoint["checkpointer"] = self.state_dict()
        try:
            if self._saves_with_metadata:
                self.save_handler(checkpoint, filename, metadata)
            else:
                self.save_handler(checkpoint, filename)
        except BaseException:
            self._topk.saved = before
            raise
        if isinstance(self.save_handler, BaseSaveHandler):
            for old in dropped:
                self.save_handler.remove(self._filename(old))

    @staticmethod
    def setup_filename_pattern(
        with_prefix: bool = True, with_score: bool = True, with_score_name: bool = True, with_global_step: bool = True
    ) -> str:
        """Ignite's default pattern: ``{filename_prefix}_{name}_{global_step}_{score_name}={score}.{ext}``
        with the parts that are not used left out."""
        if not (with_global_step or with_score):
            raise ValueError("at least one of with_score and with_global_step must be True")
        if with_score_name and not with_score:
            raise ValueError("with_score_name=True needs with_score=True")
        pattern = "{name}"
        if with_global_step:
            pattern += "_{global_step}"
        if with_score:
            pattern += "_{score_name}={score}" if with_score_name else "_{score}"
        return ("{filename_prefix}_" if with_prefix else "") + pattern + ".{ext}"

    @staticmethod
    def get_default_score_fn(metric_name: str, score_sign: float = 1.0) -> Callable[[Any], float]:
        """``engine -> score_sign * engine.state.metrics[metric_name]``; ``score_sign=-1.0`` for
        metrics where lower is better (a loss)."""
        if score_sign not in (1.0, -1.0):
            raise ValueError(f"score_sign must be 1.0 or -1.0, got {score_sign!r}")

        def score(engine: Any) -> float:
            return score_sign * engine.state.metrics[metric_name]

        return score

    # ------------------------------------------------------------------ loading

    @staticmethod
    def load_objects(to_load: Mapping[str, Any], checkpoint: Any, **kwargs: Any) -> None:
        """Load ``checkpoint`` (a dict, or a file read with ``weights_only=True``) into ``to_load``.

        With one object, a checkpoint without its key is taken as that object's own state dict.
        ``kwargs`` go to ``nn.Module.load_state_dict`` (``strict=False``).
        """
        load_objects(to_load, checkpoint, **kwargs)

    def reload_objects(
        self, to_load: Mapping[str, Any], load_kwargs: dict | None = None, **filename_components: Any
    ) -> None:
        """Load the checkpoint this handler would name from ``filename_components`` (``global_step``,
        ``score``, ``name``) into ``to_load``; needs a :class:`DiskSaver`."""
        if not isinstance(self.save_handler, DiskSaver):
            raise AttributeError(
                f"reload_objects needs a DiskSaver save_handler, got {type(self.save_handler).__name__}"
            )
        global_step = filename_components.get("global_step")
        pattern = self.filename_pattern or self.setup_filename_pattern(
            bool(self.filename_prefix), self.score_function is not None, self.score_name is not None,
            global_step is not None,
        )  # fmt: skip
        names = list(self.to_save)
        name = filename_components.get("name", names[0] if len(names) == 1 else "checkpoint")
        filename = pattern.format(
            filename_prefix=self.filename_prefix, ext=self.ext, name=name, score_name=self.score_name,
            score=filename_components.get("score"), global_step=global_step,
        )  # fmt: skip
        self.load_objects(to_load, self.save_handler.path(filename), **(load_kwargs or {}))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """``{"_saved": [(priority, filename), ...]}``, lowest priority first (Ignite's format)."""
        return {"_saved": [(item.priority, item.filename) for item in self.saved]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a saved list of kept checkpoints (Ignite's format, ``{"_saved": [(priority,
        filename), ...]}``). A loaded state is data from a file: an entry that is not a plain file name
        inside this handler's directory (a directory part, ``..``, a symlink leading out, a name this
        handler would not give) is dropped with a warning naming it, and its file is never removed.
        With a :class:`DiskSaver`, entries whose file is gone are dropped too."""
        if not isinstance(state_dict, Mapping) or "_saved" not in state_dict:
            raise ValueError(
                f"state_dict must be a dict with the key '_saved' (Checkpoint.state_dict()), got {state_dict!r}"
            )
        entries = state_dict["_saved"]
        if not isinstance(entries, (list, tuple)):
            raise ValueError(
                f"state_dict['_saved'] must be a list of (priority, filename), got {type(entries).__name__}"
            )
        saved: dict[str, float] = {}
        for entry in entries:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], numbers.Real)):
                raise ValueError(f"state_dict['_saved'] entries must be (priority, filename), got {entry!r}")
            try:
                saved[self._key(check_filename(entry[1]))] = entry[0]
            except ValueError as err:
                warnings.warn(
                    f"Checkpoint.load_state_dict: ignoring {entry[1]!r} in '_saved': {err}. It is left alone",
                    stacklevel=2,
                )
        if isinstance(self.save_handler, DiskSaver):
            self._topk.load_state_dict({"saved": saved}, where="_saved")
            self._topk.saved = {k: saved[k] for k in self._topk.saved}  # the numbers as they were (an int step)
        else:
            self._topk.saved = saved


def _takes_metadata(save_handler: Callable) -> bool:
    """Whether ``save_handler`` accepts ``(checkpoint, filename, metadata)`` (else ``(checkpoint, filename)``)."""
    try:
        inspect.signature(save_handler).bind(None, "", None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): try the full call
        return True
    return True
