"""Keeping the best ``k`` checkpoints in a directory: the file handling shared by the Trainer's
``ModelCheckpoint`` callback and the Engine's ``ember.handlers.ModelCheckpoint``.

A new checkpoint is written atomically first; only once it is in place is the checkpoint it
displaces deleted, so a crash in between leaves one file too many, never one too few.

Bookkeeping restored from a checkpoint is data from a file, possibly someone else's: a stored path
is kept only if it is a file this top-k could have written itself, one that resolves (symlinks
followed) directly inside its directory and carries a name its owner gives its files (see
:func:`foreign_reason`). Any other path is dropped with a warning naming it, and never deleted.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ember.checkpoint import io as ckpt_io
from ember.checkpoint.monitor import check_mode, improves


def foreign_reason(path: Any, directory: str, name_ok: Callable[[str], bool]) -> str | None:
    """Why ``path`` is not a file that the owner of ``directory`` could have written there (None: it
    could): it must be a str that resolves (``os.path.realpath``, symlinks followed) to a file
    directly inside ``directory``, and both its name and the resolved name must pass ``name_ok``.
    For a URL directory (``s3://...``) the path must be ``directory/<name>`` literally."""
    if not isinstance(path, str) or not path:
        return f"it is a {type(path).__name__}, not a path"
    if ckpt_io.is_url(directory):
        base = directory.rstrip("/") + "/"
        name = path[len(base) :] if path.startswith(base) else ""
        if not name or "/" in name or name in (".", ".."):
            return f"it is not a file directly in {directory!r}"
        names = {name}
    else:
        real = os.path.realpath(path)
        if os.path.dirname(real) != os.path.realpath(directory):
            shown = "" if real == os.path.abspath(path) else f" (it resolves to {real!r})"
            return f"it is not a file directly in {directory!r}{shown}"
        names = {os.path.basename(path), os.path.basename(real)}
    bad = sorted(n for n in names if not name_ok(n))
    return f"{bad[0]!r} is not a name Ember gives the files there" if bad else None


def _has_extension_of(path: str) -> Callable[[str], bool]:
    ext = os.path.splitext(path)[1]
    return lambda name: bool(ext) and name.endswith(ext) and not name.startswith(".")


class TopK:
    """Tracks saved checkpoint files with their scores; ``k=-1`` keeps all, ``k=0`` none.

    ``directory`` is where its files go and ``name_ok`` tells a name its owner gives them: paths
    restored by :meth:`load_state_dict` must match both (see :func:`foreign_reason`). Without a
    ``directory``, restored paths are checked before the next save instead, against the directory
    and the extension of the file being saved; until then they are not deleted.
    """

    def __init__(
        self, k: int, mode: str, directory: str | None = None, name_ok: Callable[[str], bool] | None = None
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < -1:
            raise ValueError(f"save_top_k/n_saved={k!r} must be -1 (keep all), 0 or a positive integer")
        self.k = k
        self.mode = check_mode(mode)
        self.directory = directory
        self.name_ok = name_ok
        self.saved: dict[str, float] = {}  # path -> score, insertion order = save order
        #: booked out of the top k by the save in progress; deleted once the new file is written
        self.dropping: list[str] = []
        self._unchecked: set[str] = set()  # restored without a directory to check them against yet
        #: files never deleted even when they fall out of the top k (the checkpoint a run resumed from)
        self.protected: set[str] = set()

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
        self._check_restored(path)
        before = dict(self.saved)
        self.dropping = self.add(path, score)
        try:
            write()
        except BaseException:
            self.saved, self.dropping = before, []
            raise
        for old in self.dropping:  # only now that their replacement is in place
            if not self.is_protected(old):
                ckpt_io.remove(old)
        dropped, self.dropping = self.dropping, []
        return dropped

    def is_protected(self, path: str) -> bool:
        """Whether ``path`` is one of :attr:`protected` (compared as absolute paths, URLs literally)."""
        if not self.protected:
            return False
        return (path if ckpt_io.is_url(path) else os.path.abspath(path)) in self.protected

    def state_dict(self) -> dict[str, Any]:
        return {"saved": dict(self.saved), "k": self.k, "mode": self.mode}

    def foreign_reason(self, path: Any) -> str | None:
        """Why ``path`` is not one of this top-k's own files (None: it is, or no directory is set yet)."""
        if self.directory is None:
            return None
        return foreign_reason(path, self.directory, self.name_ok or (lambda name: not name.startswith(".")))

    def load_state_dict(self, state: Mapping[str, Any], where: str = "saved") -> None:
        """Restore the booked files that still exist and are this top-k's own (the others are
        dropped with a warning naming the file and ``where``, the field they came from)."""
        saved = state.get("saved", {}) if isinstance(state, Mapping) else None
        if not isinstance(saved, Mapping):
            raise ValueError(f"top-k state {where!r} must be a dict of path -> score, got {type(saved).__name__}")
        self.saved, self._unchecked = {}, set()
        for path, score in saved.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                problem: str | None = f"its score {score!r} is not a number"
            else:
                problem = self.foreign_reason(path)
            if problem is not None:
                _ignored(path, where, problem)
            elif ckpt_io.exists(path):
                self.saved[path] = float(score)
                if self.directory is None:
                    self._unchecked.add(path)

    def _check_restored(self, path: str) -> None:
        """Before the first save after a restore without a directory: keep only the restored files
        that sit beside ``path`` with its extension."""
        if not self._unchecked:
            return
        directory = path.rsplit("/", 1)[0] if ckpt_io.is_url(path) else os.path.dirname(os.path.abspath(path))
        for old in sorted(self._unchecked):
            problem = foreign_reason(old, directory, _has_extension_of(path))
            if problem is not None and old in self.saved:
                del self.saved[old]
                _ignored(old, "saved", problem)
        self._unchecked = set()


def _ignored(path: Any, where: str, problem: str) -> None:
    warnings.warn(
        f"ignoring {path!r} in the checkpoint's top-k bookkeeping ({where!r}): {problem}. "
        "Ember deletes or replaces only files it wrote itself, so this file is left alone",
        stacklevel=4,
    )


def unique_path(path: str) -> str:
    """``path``, or ``path`` with ``-v1``, ``-v2``, ... before the extension if that file exists."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while ckpt_io.exists(candidate):
        n += 1
        candidate = f"{stem}-v{n}{ext}"
    return candidate
