"""MetricBuffer: batching, inline and background writing, staged device values, errors."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ember.loggers import buffer as buffer_module
from ember.loggers.buffer import MetricBuffer, to_host


def test_inline_writes_happen_in_the_logging_thread_once_per_interval():
    written: list[tuple[str, list]] = []
    buf = MetricBuffer(lambda entries: written.append((threading.current_thread().name, entries)), 60, inline=True)
    buf.add(1, {"a": torch.tensor(1.0)})
    assert written == []
    buf._due = 0.0  # as if the interval were over
    buf.add(2, {"a": 2.0})  # so this call writes both
    assert [(name, [(s, dict(zip(k, v))) for s, _, k, v in e]) for name, e in written] == [
        (threading.current_thread().name, [(1, {"a": 1.0}), (2, {"a": 2.0})])
    ]
    buf.close()


def test_the_thread_writes_what_is_left_when_logging_stops():
    written: list[tuple[str, int]] = []
    buf = MetricBuffer(
        lambda entries: written.append((threading.current_thread().name, len(entries))), 0.02, inline=True, name="bg"
    )
    buf.add(1, {"a": 1.0})
    deadline = time.monotonic() + 5
    while not written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert written == [("bg", 1)]
    buf.close()


def test_device_values_still_copying_stay_staged_until_ready(monkeypatch):
    ready = {"now": False}

    def fake_stage(entries):
        rows = [(s, w, k, [-1.0] * len(v)) for s, w, k, v in entries]

        def finish(wait):
            if not (wait or ready["now"]):
                return False
            for row in rows:
                row[3][:] = [7.0] * len(row[3])
            return True

        return rows, finish

    monkeypatch.setattr(buffer_module, "stage", fake_stage)
    written: list = []
    buf = MetricBuffer(written.extend, 60, inline=True)
    buf.add(1, {"a": 0})
    buf._due = 0.0  # as if the interval were over
    buf.add(2, {"a": 0})  # inline drain: the copies are not done, nothing waits
    assert written == [] and len(buf) == 2
    ready["now"] = True
    buf._due = 0.0
    buf.add(3, {"a": 0})
    assert [(s, dict(zip(k, v))) for s, _, k, v in written] == [(1, {"a": 7.0}), (2, {"a": 7.0}), (3, {"a": 7.0})]
    buf.close()


def test_background_errors_are_raised_in_the_callers_thread():
    def fail(entries):
        raise OSError("disk full")

    buf = MetricBuffer(fail, 0.01, name="Broken")
    buf.add(1, {"a": 1.0})
    deadline = time.monotonic() + 5
    while buf._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="Broken: writing logged metrics failed: disk full"):
        buf.add(2, {"a": 2.0})


def test_to_host_converts_every_kind_of_value_and_passes_floats_through():
    values = (torch.tensor(2, dtype=torch.int64), 1.5, torch.tensor([0.25], dtype=torch.bfloat16), 3)
    ((step, walltime, keys, floats),) = to_host([(1, 0.5, ("t", "f", "b", "i"), values)])
    assert (step, walltime, keys, list(floats)) == (1, 0.5, ("t", "f", "b", "i"), [2.0, 1.5, 0.25, 3.0])
    plain = (2, 0.0, ("x",), (1.0,))
    assert to_host([plain])[0] is plain  # nothing new to track for the garbage collector
    with pytest.raises(ValueError, match="metric 'v' must be a scalar"):
        to_host([(1, 0.0, ("v",), (torch.ones(2),))])


def test_queued_entries_are_not_tracked_by_the_garbage_collector():
    import gc

    buf = MetricBuffer(lambda entries: None, 60, inline=True)
    for step in range(3):
        buf.add(step, {"loss": 0.5, "n": 3})
    gc.collect(0)  # the young generation's pass untracks the names and values ...
    gc.collect(1)  # ... the next the entry: none reaches the oldest generation, whose growth
    assert not any(gc.is_tracked(entry) for entry in buf._queue)  # triggers full collections
    buf.close()


def test_cpu_tensor_values_are_read_when_added():
    buf = MetricBuffer(lambda entries: None, 60, inline=True)
    buf.add(3, {"loss": torch.tensor(1.5), "n": torch.tensor([2]), "f": 0.5})
    ((step, _, keys, values),) = buf._queue
    assert (step, keys, values) == (3, ("loss", "n", "f"), (1.5, 2, 0.5))
    with pytest.raises(ValueError, match=r"'v' must be a scalar, got a tensor of shape \(3,\)"):
        buf.add(4, {"v": torch.ones(3)})
    with pytest.raises(TypeError, match="'s' must be a number or a scalar tensor, got str"):
        buf.add(4, {"s": "high"})
    buf.close()
