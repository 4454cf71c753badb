"""A TensorBoard event file written in batches, its checksums computed with numpy.

TensorBoard reads TFRecord files of ``Event`` protos; each record carries a masked CRC32C of its
length and of its bytes. tensorboard's own writer computes these checksums in pure Python, byte by
byte (~40 µs for one scalar event, a tenth of a small model's training step when logging every
step). Here the checksums of a whole batch of records are computed together: one numpy table lookup
per byte position across all records, so a second's worth of per-step scalars costs about a
millisecond. The protos are tensorboard's own (``tensorboard.compat.proto``).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8
_counter = itertools.count()


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_CRC32C_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()


def masked_crc32c(chunks: Sequence[bytes]) -> np.ndarray:
    """The masked CRC32C (TFRecord's checksum) of each byte string, computed for all at once."""
    n = len(chunks)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")  # longest first: the rows still running form a prefix
    sorted_lengths = lengths[order]
    width = int(sorted_lengths[0])
    rows = np.zeros((n, width), dtype=np.uint8)
    rows[np.arange(width) < sorted_lengths[:, None]] = np.frombuffer(
        b"".join([chunks[i] for i in order]), dtype=np.uint8
    )
    out = np.empty(n, dtype=np.uint32)
    out[order] = _masked_crc_rows(rows, sorted_lengths)
    return out


def _masked_crc_rows(rows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """CRCs of the rows of a 2-D uint8 array; row i counts ``lengths[i]`` bytes (non-increasing)."""
    n, width = rows.shape
    columns = np.ascontiguousarray(rows.T)
    if lengths is None:
        active = np.full(width, n)
    else:  # how many rows are longer than j
        active = n - np.searchsorted(lengths[::-1], np.arange(width), side="right")
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    for j in range(width):
        k = int(active[j])
        head = crc[:k]
        crc[:k] = _TABLE[(head ^ columns[j, :k]) & 0xFF] ^ (head >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> 15) | (crc << 17)) + np.uint32(_MASK_DELTA)  # uint32 arithmetic wraps, as intended


def encode_records(payloads: Sequence[bytes]) -> bytes:
    """TFRecord framing: ``len (u64) | crc(len) (u32) | payload | crc(payload) (u32)``, little-endian."""
    n = len(payloads)
    if n == 0:
        return b""
    lengths = np.fromiter((len(p) for p in payloads), dtype="<u8", count=n)
    heads = np.empty((n, 12), dtype=np.uint8)
    heads[:, :8] = lengths.view(np.uint8).reshape(n, 8)
    heads[:, 8:] = _masked_crc_rows(heads[:, :8]).astype("<u4").view(np.uint8).reshape(n, 4)
    head_bytes = heads.tobytes()
    tail_bytes = masked_crc32c(payloads).astype("<u4").tobytes()
    parts = []
    for i, p in enumerate(payloads):
        parts += (head_bytes[12 * i : 12 * i + 12], p, tail_bytes[4 * i : 4 * i + 4])
    return b"".join(parts)


class EventFile:
    """One ``events.out.tfevents.*`` file in ``log_dir``, opened on creation; thread-safe writes."""

    def __init__(self, log_dir: str | os.PathLike, filename_suffix: str = "") -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_counter)}"
        self.path = Path(log_dir) / (name + ".ember" + filename_suffix)
        self._lock = threading.Lock()
        self._file: Any = open(self.path, "ab")
        self.write([Event(wall_time=time.time(), file_version="brain.Event:2")])

    def write_records(self, blob: bytes) -> None:
        """Append already framed records (see :func:`scalar_records`) and hand them to the OS."""
        if blob:
            with self._lock:
                self._file.write(blob)
                self._file.flush()

    def write(self, events: Sequence[Any]) -> None:
        """Append ``Event`` protos (or their serialized bytes) and hand them to the OS. No fsync: an
        append-only log, flushed on every write, where an OS crash costs at most the last writes
        (an fsync per write would cost tens of milliseconds on a busy disk)."""
        if not events:
            return
        blob = encode_records([e if isinstance(e, bytes) else e.SerializeToString() for e in events])
        with self._lock:
            self._file.write(blob)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def scalar_events(entries: Sequence[tuple[int, float, tuple[str, ...], Sequence[float]]]) -> list[bytes]:
    """One serialized ``Event`` per ``(step, walltime, names, values)`` entry holding its scalars
    as ``simple_value`` (what ``SummaryWriter.add_scalar`` writes, batched).

    Encoded directly in protobuf's wire format, the bytes that depend only on the names made once
    per names tuple: building the messages through the protobuf classes costs several times more."""
    layouts: dict[tuple[str, ...], tuple[list[bytes], bytes]] = {}
    out = []
    double, varint, float32 = _DOUBLE, _varint, _float32
    for step, walltime, keys, values in entries:
        layout = layouts.get(keys)
        if layout is None:
            prefixes = [_value_prefix(k) for k in keys]
            size = sum(len(p) + 4 for p in prefixes)
            layout = layouts[keys] = (prefixes, b"\x2a" + varint(size))
        prefixes, summary_head = layout
        if len(prefixes) == 1:
            summary = prefixes[0] + float32(values[0])
        else:
            summary = b"".join([p + float32(v) for p, v in zip(prefixes, values)])
        out.append(b"\x09" + double(walltime) + b"\x10" + varint(step & 0xFFFFFFFFFFFFFFFF) + summary_head + summary)
    return out


def scalar_records(entries: Sequence[tuple[int, float, tuple[str, ...], Sequence[float]]]) -> bytes:
    """The framed records of :func:`scalar_events`, in order, built with numpy for every run of
    entries that share one names tuple and one step width (the usual case: the same metrics each
    step), entry by entry for the rest."""
    n = len(entries)
    if n == 0:
        return b""
    steps = np.fromiter((e[0] for e in entries), dtype=np.int64, count=n)
    widths = np.ones(n, dtype=np.int64)
    for bits in range(7, 63, 7):  # a varint holds 7 bits a byte
        widths += steps >= (1 << bits)
    widths[steps < 0] = 10
    starts = set((np.flatnonzero(widths[1:] != widths[:-1]) + 1).tolist())
    starts.update(i for i in range(1, n) if entries[i][2] is not entries[i - 1][2])
    bounds = [0, *sorted(starts), n]
    out = []
    for i, j in itertools.pairwise(bounds):
        run = entries[i:j]
        width = int(widths[i])
        if j - i >= 8 and width < 10:
            out.append(_scalar_run(run, width, steps[i:j]))
        else:
            out.append(encode_records(scalar_events(run)))
    return b"".join(out)


def _scalar_run(
    run: Sequence[tuple[int, float, tuple[str, ...], Sequence[float]]], width: int, steps: np.ndarray
) -> bytes:
    """Records for entries with the same names and non-negative steps of one varint width: every
    event has the same layout, so each column of bytes is filled at once."""
    m = len(run)
    prefixes = [_value_prefix(k) for k in run[0][2]]
    summary = sum(len(p) + 4 for p in prefixes)
    summary_head = b"\x2a" + _varint(summary)
    length = 1 + 8 + 1 + width + len(summary_head) + summary
    rows = np.empty((m, length), dtype=np.uint8)
    rows[:, 0] = 0x09
    rows[:, 1:9] = np.fromiter((e[1] for e in run), dtype="<f8", count=m).view(np.uint8).reshape(m, 8)
    rows[:, 9] = 0x10
    steps = steps.astype(np.uint64)
    for b in range(width):  # varint: 7 bits a byte, high bit set on all but the last
        byte = (steps >> np.uint64(7 * b)) & np.uint64(0x7F)
        rows[:, 10 + b] = byte | np.uint64(0x80) if b < width - 1 else byte
    col = 10 + width
    rows[:, col : col + len(summary_head)] = np.frombuffer(summary_head, dtype=np.uint8)
    col += len(summary_head)
    k = len(prefixes)
    with np.errstate(over="ignore"):  # beyond float32's range: inf, as protobuf stores it
        if k == 1:
            values = np.fromiter((e[3][0] for e in run), dtype="<f4", count=m).reshape(m, 1)
        else:
            values = np.array([e[3] for e in run], dtype="<f4").reshape(m, k)
    for j, prefix in enumerate(prefixes):
        rows[:, col : col + len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        col += len(prefix)
        rows[:, col : col + 4] = np.ascontiguousarray(values[:, j]).view(np.uint8).reshape(m, 4)
        col += 4
    head = np.empty((1, 12), dtype=np.uint8)
    head[0, :8] = np.array([length], dtype="<u8").view(np.uint8)
    head[0, 8:] = _masked_crc_rows(head[:, :8]).astype("<u4").view(np.uint8)
    tail = _masked_crc_rows(rows).astype("<u4").view(np.uint8).reshape(m, 4)
    return np.concatenate([np.broadcast_to(head, (m, 12)), rows, tail], axis=1).tobytes()


def _value_prefix(tag: str) -> bytes:
    # Summary.value (field 1, length-delimited) holding Value{tag: field 1 string, simple_value: field 2 float}
    raw = tag.encode("utf-8")
    inner = b"\x0a" + _varint(len(raw)) + raw + b"\x15"
    return b"\x0a" + _varint(len(inner) + 4) + inner


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _float32(value: float) -> bytes:
    try:
        return _FLOAT(value)
    except OverflowError:  # beyond float32's range: what protobuf stores too
        return _FLOAT(math.copysign(math.inf, value))


_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack


def purge_event(step: int) -> Any:
    """A ``SessionLog.START`` at ``step``: TensorBoard drops earlier-written events with steps >= ``step``."""
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    return Event(wall_time=time.time(), step=step, session_log=SessionLog(status=SessionLog.START))
