"""Where an export goes: a path (written atomically) or any writable binary file-like object.

Exporters in torch take a path (``torch.onnx.export`` special-cases ``BytesIO`` with a deprecation
warning and fails on an open file), so every Ember export writes to a real file first: for a path
target, a temporary directory next to it, then ``os.replace``; for a file-like target, a private
temporary directory, then the bytes are copied into the caller's object.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeAlias

ExportTarget: TypeAlias = "str | os.PathLike[str] | IO[bytes]"


def check_target(target: Any, argument: str = "file_path") -> None:
    """Raise a clear ``TypeError`` unless ``target`` is a path or a writable binary file-like object."""
    if isinstance(target, (str, os.PathLike)):
        if str(target) == "":
            raise ValueError(f"{argument}='' is empty; give a file path or a writable binary file object")
        return
    if isinstance(target, io.TextIOBase):
        raise TypeError(f"{argument} is a text-mode file ({target!r}); exports are binary: open it with mode 'wb'")
    write = getattr(target, "write", None)
    if not callable(write):
        raise TypeError(
            f"{argument} must be a str, an os.PathLike or a writable binary file-like object "
            f"(io.BytesIO, open(path, 'wb')); got {type(target).__name__}"
        )
    writable = getattr(target, "writable", None)
    if callable(writable) and not writable():
        raise ValueError(f"{argument} ({target!r}) is not writable; open it with mode 'wb'")


def write_export(target: Any, filename: str, write: Callable[[str], None], argument: str = "file_path") -> None:
    """Call ``write(path)`` to produce the file, then deliver it to ``target``.

    ``filename`` names the temporary file for file-like targets (some exporters look at the suffix).
    Path targets are replaced atomically: readers see the old file or the complete new one.
    """
    check_target(target, argument)
    if isinstance(target, (str, os.PathLike)):
        _write_path_atomically(Path(target), write)
        return
    with tempfile.TemporaryDirectory(prefix="ember-export-") as tmp:
        path = os.path.join(tmp, filename)
        write(path)
        extra = sorted(set(os.listdir(tmp)) - {filename})
        if extra:
            raise ValueError(
                f"this export wrote several files ({filename!r} and {extra}); "
                f"a file-like {argument} holds one: export to a path instead"
            )
        with open(path, "rb") as src:
            shutil.copyfileobj(src, target)
    flush = getattr(target, "flush", None)
    if callable(flush):
        flush()


def _write_path_atomically(target: Path, write: Callable[[str], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A directory next to the target, so os.replace stays on one filesystem and the temporary
    # file keeps the target's own name (exporters may check the suffix or write sidecars).
    tmp_dir = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        tmp = os.path.join(tmp_dir, target.name)
        write(tmp)
        if not os.path.isfile(tmp):
            raise RuntimeError(f"the exporter did not write {target.name!r}")
        # Sidecar files (ONNX external data) first, the main file last: once the main file is in
        # place, everything it refers to is too.
        names = sorted(os.listdir(tmp_dir), key=lambda name: name == target.name)
        for name in names:
            path = os.path.join(tmp_dir, name)
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(path, target.parent / name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
