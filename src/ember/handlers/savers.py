"""Where ``Checkpoint`` writes: ``BaseSaveHandler`` (the protocol) and ``DiskSaver`` (a directory).

A save handler is called as ``handler(checkpoint, filename, metadata)`` with the objects' state
dicts and a file name chosen by :class:`~ember.handlers.Checkpoint`; a ``BaseSaveHandler`` is also
asked to ``remove(filename)`` what falls out of the kept checkpoints. Any callable can save (it is
then never asked to remove anything), as in Ignite.
"""

from __future__ import annotations

import io
import os
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ember.checkpoint import io as ckpt_io
from ember.distributed import comms


class BaseSaveHandler(metaclass=ABCMeta):
    """Saves a checkpoint under a file name, and removes one; subclass it for other storage."""

    @abstractmethod
    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Save ``checkpoint`` (state dicts) as ``filename``; ``metadata`` holds ``basename``,
        ``score_name`` and ``priority``."""

    @abstractmethod
    def remove(self, filename: str) -> None:
        """Remove the checkpoint saved as ``filename``."""


def check_filename(filename: Any) -> str:
    """``filename`` when it names a file directly inside the save directory: a relative path with no
    ``..`` and no directory part, so nothing can point a save or a removal outside it."""
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"a checkpoint file name must be a non-empty string, got {filename!r}")
    if filename in (".", "..") or "/" in filename or "\\" in filename or os.sep in filename or "\0" in filename:
        raise ValueError(
            f"checkpoint file name {filename!r} is not a plain file name; Checkpoint only saves and removes "
            "files directly inside its directory"
        )
    return filename


class DiskSaver(BaseSaveHandler):
    """Saves checkpoints as files in ``dirname`` with ``torch.save`` (``kwargs`` go to it).

    Args:
        dirname: the directory (``~`` expanded).
        atomic: accepted for Ignite's signature; Ember always writes atomically (a temporary file
            in the directory, then a rename), so a crash never leaves a half-written checkpoint.
        create_dir: create ``dirname`` (and its parents) when missing; else it must exist.
        require_empty: refuse a directory that already holds ``.pt`` files.
        save_on_rank: the process (global rank) that writes and removes files.
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        atomic: bool = True,
        create_dir: bool = True,
        require_empty: bool = True,
        save_on_rank: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dirname, (str, os.PathLike)):
            raise TypeError(f"dirname must be a directory path, got {dirname!r}")
        if isinstance(save_on_rank, bool) or not isinstance(save_on_rank, int) or save_on_rank < 0:
            raise ValueError(f"save_on_rank must be a process rank (an int >= 0), got {save_on_rank!r}")
        self.dirname = Path(dirname).expanduser()
        self._atomic = bool(atomic)
        self.save_on_rank = save_on_rank
        self.kwargs = kwargs
        if comms.get_rank() == save_on_rank:
            self._check_and_setup(create_dir, require_empty)

    def _check_and_setup(self, create_dir: bool, require_empty: bool) -> None:
        if create_dir:
            self.dirname.mkdir(parents=True, exist_ok=True)
        if not self.dirname.is_dir():
            raise ValueError(f"directory {str(self.dirname)!r} does not exist (create_dir=False)")
        if require_empty:
            found = sorted(name for name in os.listdir(self.dirname) if name.endswith(".pt"))
            if found:
                raise ValueError(
                    f"files {found} with extension .pt already exist in {str(self.dirname)!r}; "
                    "pass require_empty=False to write there anyway"
                )

    def path(self, filename: str) -> Path:
        """Where ``filename`` is stored (refusing names that would leave the directory)."""
        return self.dirname / check_filename(filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        path = self.path(filename)
        if comms.get_rank() != self.save_on_rank:
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer, **self.kwargs)
        ckpt_io.write_bytes(path, buffer.getvalue())

    def remove(self, filename: str) -> None:
        path = self.path(filename)
        if comms.get_rank() == self.save_on_rank:
            ckpt_io.remove(path)
