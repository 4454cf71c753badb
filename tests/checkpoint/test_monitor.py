"""The one "did it improve?" test (``ember.checkpoint.monitor``) and the top-k bookkeeping built on it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ember.checkpoint import io as ckpt_io
from ember.checkpoint.monitor import check_mode, improves
from ember.checkpoint.topk import TopK, unique_path


@pytest.mark.parametrize(
    ("current", "best", "mode", "min_delta", "expected"),
    [
        (0.9, 1.0, "min", 0.0, True),
        (1.0, 1.0, "min", 0.0, False),  # equal is no improvement
        (1.1, 1.0, "max", 0.0, True),
        (0.9, 1.0, "max", 0.0, False),
        (0.96, 1.0, "min", 0.05, False),  # better, but not by more than min_delta
        (0.94, 1.0, "min", 0.05, True),
        (1.04, 1.0, "max", 0.05, False),
        (5.0, math.inf, "min", 0.1, True),  # the first value beats the initial best
        (-5.0, -math.inf, "max", 0.1, True),
    ],
)
def test_improves(current, best, mode, min_delta, expected) -> None:
    assert improves(current, best, mode, min_delta) is expected


def test_relative_min_delta_is_a_fraction_of_the_best() -> None:
    assert not improves(105.0, 100.0, "max", 0.1, relative=True)
    assert improves(111.0, 100.0, "max", 0.1, relative=True)
    assert improves(-111.0, -100.0, "min", 0.1, relative=True)  # abs(best): the sign does not flip it


@pytest.mark.parametrize("mode", ["min", "max"])
def test_nan_never_improves_and_nothing_improves_on_nan(mode) -> None:
    assert not improves(math.nan, 1.0, mode)
    assert not improves(1.0, math.nan, mode)
    assert not improves(math.nan, math.inf if mode == "min" else -math.inf, mode)


def test_check_mode_names_the_value() -> None:
    assert check_mode("max") == "max"
    with pytest.raises(ValueError, match="mode='best'; choose 'min' or 'max'"):
        check_mode("best")


def test_topk_never_takes_nan_even_with_room() -> None:
    assert not TopK(-1, "min").accepts(math.nan)
    assert not TopK(3, "max").accepts(math.nan)


def test_topk_save_deletes_the_displaced_file_only_after_the_new_one_is_written(tmp_path: Path) -> None:
    topk = TopK(1, "min")
    first, second = str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")
    assert topk.save(first, 2.0, lambda: ckpt_io.save_object({"v": 1}, first)) == []
    seen = []

    def write() -> None:  # runs with the new bookkeeping in place, before anything is deleted
        seen.append((dict(topk.saved), list(topk.dropping), Path(first).exists()))
        ckpt_io.save_object({"v": 2}, second)

    assert topk.accepts(1.0)
    assert topk.save(second, 1.0, write) == [first]
    assert seen == [({second: 1.0}, [first], True)]
    assert not Path(first).exists() and Path(second).exists()
    assert topk.dropping == [] and topk.saved == {second: 1.0}


def test_topk_save_books_nothing_when_the_write_fails(tmp_path: Path) -> None:
    topk = TopK(1, "max")
    kept = str(tmp_path / "kept.ckpt")
    topk.save(kept, 1.0, lambda: ckpt_io.save_object({"v": torch.ones(1)}, kept))

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        topk.save(str(tmp_path / "new.ckpt"), 5.0, fail)
    assert topk.saved == {kept: 1.0} and topk.dropping == []
    assert Path(kept).exists()


def test_unique_path_appends_a_version_when_the_file_exists(tmp_path: Path) -> None:
    path = tmp_path / "epoch=1.ckpt"
    assert unique_path(str(path)) == str(path)
    path.write_bytes(b"x")
    (tmp_path / "epoch=1-v1.ckpt").write_bytes(b"x")
    assert unique_path(str(path)) == str(tmp_path / "epoch=1-v2.ckpt")
