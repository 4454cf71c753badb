"""Ignite's ``ModelCheckpoint``: a :class:`~ember.handlers.Checkpoint` on a directory, told what to save at each call."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ember.handlers.checkpoint import Checkpoint
from ember.handlers.objects import check_objects
from ember.handlers.savers import DiskSaver


class ModelCheckpoint(Checkpoint):
    """Ignite's ``ModelCheckpoint``: a :class:`Checkpoint` on a :class:`DiskSaver`, given what to
    save at each call: ``engine.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": model})``.
    The arguments are :class:`DiskSaver`'s and :class:`Checkpoint`'s (``kwargs`` go to ``torch.save``)."""

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
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
        save_on_rank: int = 0,
        **kwargs: Any,
    ) -> None:
        saver = DiskSaver(dirname, atomic, create_dir, require_empty, save_on_rank, **kwargs)
        super().__init__(
            {}, saver, filename_prefix, score_function, score_name, n_saved, global_step_transform,
            filename_pattern, include_self, greater_or_equal, save_on_rank,
        )  # fmt: skip

    def __call__(self, engine: Any, to_save: Mapping[str, Any]) -> None:
        if not to_save:
            raise RuntimeError("ModelCheckpoint got no objects to checkpoint: pass {name: object} when attaching it")
        check_objects(to_save, "state_dict", "to_save")
        self.to_save = to_save
        super().__call__(engine)
