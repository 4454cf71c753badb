"""Special and hostile files given as checkpoints: only regular files are read (a symlink to
``/dev/zero`` and a FIFO are refused unread), and a zip whose records would expand out of
proportion to the file is refused before torch reads it (issue 13, item 4)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from ember.checkpoint import CheckpointError, load_checkpoint, new_checkpoint, save_checkpoint

# Runs the load in its own process, with its address space capped a little above what it uses after
# the imports: a loader that reads /dev/zero runs out of memory there (MemoryError), not on this
# machine; a loader that blocks on a FIFO is stopped by the hang guard below (no speed is asserted).
LOAD_IN_A_CAPPED_PROCESS = textwrap.dedent(
    """
    import resource, sys
    from ember.checkpoint import CheckpointError, load_checkpoint
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, used + 2**30))
    try:
        load_checkpoint(sys.argv[1])
    except CheckpointError as err:
        print("REFUSED", err)
    except MemoryError:
        print("READ UNTIL MEMORY RAN OUT")
    else:
        print("LOADED")
    """
)
HANG_GUARD_S = 300  # a loader that blocks forever would otherwise hang the test suite


def load_elsewhere(path: Path) -> str:
    try:
        out = subprocess.run(
            [sys.executable, "-c", LOAD_IN_A_CAPPED_PROCESS, str(path)],
            capture_output=True, text=True, timeout=HANG_GUARD_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "BLOCKED"
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_symlink_to_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    link = tmp_path / "pretrained.ckpt"
    os.symlink("/dev/zero", link)
    result = load_elsewhere(link)
    assert result.startswith("REFUSED"), result
    assert repr(str(link)) in result and "'/dev/zero' is a character device" in result and "not a regular file" in result
    # a symlink to a regular file is read as before
    save_checkpoint({**new_checkpoint(), "state_dict": {"w": torch.arange(3.0)}}, tmp_path / "real.ckpt")
    os.symlink(tmp_path / "real.ckpt", tmp_path / "link.ckpt")
    assert torch.equal(load_checkpoint(tmp_path / "link.ckpt")["state_dict"]["w"], torch.arange(3.0))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.ckpt"
    os.mkfifo(fifo)
    result = load_elsewhere(fifo)
    assert result.startswith("REFUSED"), result
    assert repr(str(fifo)) in result and "FIFO" in result
    # nothing holds it open for reading: a writer finds no reader
    with pytest.raises(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_directory_and_a_missing_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"x\.ckpt.*is a directory"):
        (tmp_path / "x.ckpt").mkdir()
        load_checkpoint(tmp_path / "x.ckpt")
    with pytest.raises(FileNotFoundError, match=r"gone\.ckpt"):
        load_checkpoint(tmp_path / "gone.ckpt")


def _recompressed(data: bytes) -> bytes:
    """The same torch archive with every record deflated (what torch.save never writes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def test_a_zip_bomb_is_refused_before_torch_expands_it(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({**new_checkpoint(), "state_dict": {"w": torch.zeros(8 * 2**20)}}, buffer)  # 32 MiB of zeros
    bomb = tmp_path / "small.ckpt"
    bomb.write_bytes(_recompressed(buffer.getvalue()))
    assert bomb.stat().st_size < 2**20  # under 1 MiB on disk
    with pytest.raises(CheckpointError, match=r"small\.ckpt.*record .* is compressed"):
        load_checkpoint(bomb)


def test_records_larger_than_the_file_are_refused(tmp_path: Path) -> None:
    """Two directory entries pointing at the same stored bytes (overlapping records) declare more
    bytes than the file holds."""
    path = tmp_path / "overlap.ckpt"
    save_checkpoint({**new_checkpoint(), "state_dict": {"w": torch.ones(4096)}}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        big = max(archive.infolist(), key=lambda i: i.file_size)
    # the central directory entry of the largest record, declared larger than the whole file
    # (compressed and uncompressed sizes at offsets 20 and 24 of the entry)
    start = 0
    while True:
        entry = data.index(b"PK\x01\x02", start)
        name_len = int.from_bytes(data[entry + 28 : entry + 30], "little")
        if data[entry + 46 : entry + 46 + name_len].decode() == big.filename:
            break
        start = entry + 4
    for offset in (20, 24):
        data[entry + offset : entry + offset + 4] = (big.file_size * 4 + len(data)).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"overlap\.ckpt.*declare .* bytes or more, but the file has"):
        load_checkpoint(path)
