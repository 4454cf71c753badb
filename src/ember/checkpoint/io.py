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
is refused, and nothing in it runs.
"""

from __future__ import annotations

import io
import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch

from ember.io.atomic import atomic_write_bytes

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A file is not a loadable Ember checkpoint (truncated, foreign, unsafe or from the future)."""


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

    A local file in torch's zip format is read by torch record by record (one copy of the data in
    memory); other files and URLs are read whole first. Not memory-mapped: the tensors would alias
    the file, and a file overwritten in place (``cp``) would change a running model's state.
    """
    name = os.fspath(path)
    source: Any
    try:
        if is_url(path):
            source = read_bytes(path)
        else:
            local = _local(path)
            source = local if local.stat().st_size and zipfile.is_zipfile(local) else local.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {name!r} does not exist") from None
    if isinstance(source, bytes) and not source:
        raise CheckpointError(f"{name!r} is empty: not an Ember checkpoint (was its write interrupted?)")
    try:
        if isinstance(source, bytes):
            return torch.load(io.BytesIO(source), map_location=map_location, weights_only=True)
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
