"""Keeping the best ``k`` checkpoints in a directory: the file handling shared by the Trainer's
``ModelCheckpoint`` callback and the Engine's ``ember.handlers.ModelCheckpoint``.

A new checkpoint is written atomically first; only once it is in place is the checkpoint it
displaces deleted, so a crash in between leaves one file too many, never one too few.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from ember.checkpoint import io as ckpt_io
from ember.checkpoint.monitor import check_mode, improves


class TopK:
    """Tracks saved checkpoint files with their scores; ``k=-1`` keeps all, ``k=0`` none."""

    def __init__(self, k: int, mode: str) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < -1:
            raise ValueError(f"save_top_k/n_saved={k!r} must be -1 (keep all), 0 or a positive integer")
        self.k = k
        self.mode = check_mode(mode)
        self.saved: dict[str, float] = {}  # path -> score, insertion order = save order
        #: booked out of the top k by the save in progress; deleted once the new file is written
        self.dropping: list[str] = []

    def worst(self) -> str | None:
        if not self.saved:
            return None
        key = max if self.mode == "min" else min
        return key(self.saved, key=lambda p: (self.saved[p], -list(self.saved).index(p)))

    def best(self) -> str | None:
        if not self.saved:
            return None
        key = min if self.mode == "min" else max
        return key(self.saved, key=lambda p: self.saved[p])

    def accepts(self, score: float) -> bool:
        """Whether a checkpoint with ``score`` belongs in the top k."""
        if self.k == 0 or (isinstance(score, float) and math.isnan(score)):
            return False
        if self.k == -1 or len(self.saved) < self.k:
            return True
        worst = self.worst()
        return worst is not None and improves(score, self.saved[worst], self.mode)

    def add(self, path: str, score: float) -> list[str]:
        """Book ``path`` with ``score`` and unbook what falls out of the top k; returns those paths.
        No I/O: the caller writes ``path`` first and deletes the returned files after."""
        self.saved.pop(path, None)
        self.saved[path] = score
        dropped = []
        while self.k != -1 and len(self.saved) > self.k:
            worst = self.worst()
            assert worst is not None
            del self.saved[worst]
            if worst != path:
                dropped.append(worst)
        return dropped

    def save(self, path: str, score: float, write: Callable[[], Any]) -> list[str]:
        """Book ``path`` with ``score``, call ``write()`` to write it (atomically), then delete what fell
        out of the top k; returns the deleted paths.

        ``write`` runs with the new bookkeeping in place (:attr:`saved` holds ``path``, :attr:`dropping`
        the files it displaces), so a checkpoint that stores that bookkeeping knows its own file and a
        run resumed from it keeps pruning the right ones. If ``write`` raises, nothing is booked.

        Example::

            topk.save(path, score, lambda: ckpt_io.save_object(state, path))
        """
        before = dict(self.saved)
        self.dropping = self.add(path, score)
        try:
            write()
        except BaseException:
            self.saved, self.dropping = before, []
            raise
        for old in self.dropping:  # only now that their replacement is in place
            ckpt_io.remove(old)
        dropped, self.dropping = self.dropping, []
        return dropped

    def state_dict(self) -> dict[str, Any]:
        return {"saved": dict(self.saved), "k": self.k, "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = {p: float(s) for p, s in state.get("saved", {}).items() if ckpt_io.exists(p)}


def unique_path(path: str) -> str:
    """``path``, or ``path`` with ``-v1``, ``-v2``, ... before the extension if that file exists."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while ckpt_io.exists(candidate):
        n += 1
        candidate = f"{stem}-v{n}{ext}"
    return candidate
