"""Reading and writing checkpoint files: atomic writes, safe loads, local paths and fsspec URLs.

Guarantees by kind of target:

- **local paths** (and ``file://`` URLs): temp file in the same directory, flush + fsync,
  ``os.replace``, fsync of the directory. A crash or a full disk at any instant leaves the old file
  or the new one, never a torn one.
- **other fsspec URLs** (``memory://``, ``s3://``, ``gs://``, ...): the bytes are written to a
  temporary object next to the target and moved into place with the filesystem's ``mv``. Object
  stores upload an object whole (it is visible complete or not at all); ``mv`` on them is
  copy-then-delete, so a crash between the two can leave the temporary object behind, never a torn
  target.

Loading always uses ``torch.load(weights_only=True)``: a file that would need to run code to load
is refused, and nothing in it runs. Only regular files are read (a FIFO, a device such as
``/dev/zero`` or a symlink to one is refused before it is opened for reading), and a zip archive is
inspected first: torch stores every record uncompressed, so a compressed record, or records larger
than the file, mark a file that would expand out of proportion, and it is refused unread.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch

from ember.io.atomic import atomic_write_bytes

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint cannot be used: the file is not a loadable Ember checkpoint (truncated, foreign,
    malformed, unsafe, not a regular file, or from the future), or ``ckpt_path="last"``/``"best"``
    names none. The message names the file."""


def is_url(path: PathLike) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _local(path: PathLike) -> Path:
    p = os.fspath(path)
    return Path(p[len("file://") :] if p.startswith("file://") else p)


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - fsspec ships with torch
        raise ImportError(f"writing to {url!r} needs fsspec: pip install fsspec") from err
    return fsspec.core.url_to_fs(url)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a local path or fsspec URL, all or nothing (see the module docstring)."""
    if not is_url(path):
        atomic_write_bytes(_local(path), data)
        return
    fs, target = _fs(os.fspath(path))
    parent = target.rsplit("/", 1)[0] if "/" in target else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, target)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        finally:
            raise


def read_bytes(path: PathLike) -> bytes:
    if not is_url(path):
        return _local(path).read_bytes()
    fs, target = _fs(os.fspath(path))
    with fs.open(target, "rb") as f:
        return f.read()


def exists(path: PathLike) -> bool:
    if not is_url(path):
        return _local(path).exists()
    fs, target = _fs(os.fspath(path))
    return fs.exists(target)


def remove(path: PathLike) -> None:
    if not is_url(path):
        _local(path).unlink(missing_ok=True)
        return
    fs, target = _fs(os.fspath(path))
    if fs.exists(target):
        fs.rm(target)


def listed_with_mtime(directory: str, suffix: str = ".ckpt") -> list[tuple[str, float]]:
    """``(url, modification time)`` of the files ending in ``suffix`` directly in an fsspec URL
    directory (time 0.0 where the filesystem does not say)."""
    fs, target = _fs(directory)
    base = directory.rstrip("/")
    found = []
    for entry in fs.ls(target, detail=True) if fs.exists(target) else []:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "file" or not name.endswith(suffix) or name.startswith("."):
            continue
        try:
            mtime = fs.modified(entry["name"]).timestamp()
        except (NotImplementedError, OSError, AttributeError):
            mtime = 0.0
        found.append((f"{base}/{name}", mtime))
    return found


def save_object(obj: Any, path: PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def load_object(path: PathLike, map_location: Any = None) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and say what is wrong.

    A local file must be a regular file (checked on the resolved path before it is opened, then again
    on the opened descriptor); it is read by torch record by record (one copy of the data in memory).
    URLs are read whole first. A zip archive's directory is checked before torch reads it (see the
    module docstring). Not memory-mapped: the tensors would alias the file, and a file overwritten in
    place (``cp``) would change a running model's state.
    """
    name = os.fspath(path)
    if is_url(path):
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"checkpoint {name!r} does not exist") from None
        if not data:
            raise CheckpointError(f"{name!r} is empty: not an Ember checkpoint (was its write interrupted?)")
        source: Any = io.BytesIO(data)
        check_archive(source, len(data), name)
        return _torch_load(source, map_location, name)
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            raise CheckpointError(f"{name!r} is empty: not an Ember checkpoint (was its write interrupted?)")
        check_archive(f, size, name)
        return _torch_load(f, map_location, name)


def _describe(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((text for test, text in kinds if test(mode)), "not a regular file")


def open_regular_file(path: PathLike) -> Any:
    """``path`` opened for binary reading, if it is (or a symlink resolves to) a regular file;
    a :class:`CheckpointError` naming it otherwise, before anything is read from it (a FIFO is
    opened without blocking, and only to confirm that it is still the file that was checked)."""
    name = os.fspath(path)
    local = os.fspath(_local(path))
    try:
        before = os.stat(local)  # follows symlinks: the file that would be read
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {name!r} does not exist") from None
    via = f", the target of the symlink {name!r}" if os.path.islink(local) else ""
    if not stat.S_ISREG(before.st_mode):
        target = os.path.realpath(local)
        raise CheckpointError(
            f"{name!r} is not a regular file ({target!r} is {_describe(before.st_mode)}{via}): "
            "a checkpoint is read only from a regular file; refused without reading it"
        )
    fd = os.open(local, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise CheckpointError(f"{name!r} was replaced while it was being opened; refused without reading it")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_archive(f: Any, size: int, name: str) -> None:
    """Refuse a zip archive (torch's format) whose records would expand out of proportion to the
    file: torch stores every record uncompressed, so each must be stored and all together must fit
    in the file's ``size`` bytes. Reads only the archive's central directory; ``f`` is left at its
    start. Files that are not zip archives pass (torch then reads or refuses them itself)."""
    try:
        if not zipfile.is_zipfile(f):
            return
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"{name!r} is not a readable checkpoint: its zip directory is damaged ({err})") from None
    finally:
        f.seek(0)
    total = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{name!r} was refused: its record {record.filename!r} is compressed ({record.file_size} bytes from "
                f"{record.compress_size}); torch stores checkpoint records uncompressed, so this file was not "
                "written by torch.save and could expand out of proportion to its size"
            )
        total += record.file_size
        if total > size:
            raise CheckpointError(
                f"{name!r} was refused: its records declare {total} bytes or more, but the file has {size}; "
                "a checkpoint's records are stored whole inside it, so it could expand out of proportion to its size"
            )


def _torch_load(source: Any, map_location: Any, name: str) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickling_detail(str(err))
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"{name!r} was refused: loading it would import and call code ({detail}). Ember checkpoints hold "
                "only tensors and plain values and load with weights_only=True; nothing from this file was run"
            ) from None
        raise CheckpointError(f"{name!r} is not an Ember checkpoint: torch cannot read it safely ({detail})") from None
    except Exception as err:  # arbitrary bytes fail anywhere in the unpickler (KeyError, IndexError, struct.error, ...)
        detail = f"{type(err).__name__}: {err}"
        raise CheckpointError(f"{name!r} is not a readable checkpoint (truncated or not a torch file): {detail}") from None


def _unpickling_detail(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported operand" in ln or "load key" in ln:
            return ln
    return lines[-1] if lines else message
