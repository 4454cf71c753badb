"""Keeping the best ``k`` checkpoints in a directory: the file handling shared by the Trainer's
``ModelCheckpoint`` callback and the Engine's ``ember.handlers.ModelCheckpoint``.

A new checkpoint is written atomically first; only once it is in place is the checkpoint it
displaces deleted, so a crash in between leaves one file too many, never one too few.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ember.checkpoint import io as ckpt_io


class TopK:
    """Tracks saved checkpoint files with their scores; ``k=-1`` keeps all, ``k=0`` none."""

    def __init__(self, k: int, mode: str) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < -1:
            raise ValueError(f"save_top_k/n_saved={k!r} must be -1 (keep all), 0 or a positive integer")
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r}; choose 'min' or 'max'")
        self.k = k
        self.mode = mode
        self.saved: dict[str, float] = {}  # path -> score, insertion order = save order

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

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
        return worst is not None and self._better(score, self.saved[worst])

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

    def save(self, obj: Any, path: str, score: float) -> list[str]:
        """Write ``obj`` to ``path`` (atomically), then delete what fell out of the top k; returns removed paths."""
        before = dict(self.saved)
        dropped = self.add(path, score)
        try:
            ckpt_io.save_object(obj, path)
        except BaseException:
            self.saved = before
            raise
        for old in dropped:
            ckpt_io.remove(old)
        return dropped

    def state_dict(self) -> dict[str, Any]:
        return {"saved": dict(self.saved), "k": self.k, "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = {p: float(s) for p, s in state.get("saved", {}).items() if ckpt_io.exists(p)}


def unique_path(path: str, taken: set[str] | None = None) -> str:
    """``path``, or ``path`` with ``-v1``, ``-v2``, ... before the extension if it is already used."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while ckpt_io.exists(candidate) or (taken is not None and candidate in taken):
        n += 1
        candidate = f"{stem}-v{n}{ext}"
    return candidate
