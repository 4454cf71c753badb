"""``ember.loggers.send_metrics``: the one path by which values reach loggers."""

from __future__ import annotations

from typing import Any

import torch

from ember.loggers import Logger, send_metrics


class Recorder(Logger):
    def __init__(self, accepts_tensors: bool) -> None:
        self.accepts_tensors = accepts_tensors
        self.calls: list[tuple[dict[str, Any], int]] = []

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.calls.append((metrics, step))


def test_tensors_to_loggers_that_take_them_floats_to_the_others() -> None:
    metrics = {"loss": torch.tensor(0.25), "acc": torch.tensor(3, dtype=torch.int64), "lr": 1e-3}
    takes, plain, plain2 = Recorder(True), Recorder(False), Recorder(False)
    send_metrics([takes, plain, plain2], metrics, 7)
    assert takes.calls == [(metrics, 7)] and takes.calls[0][0] is metrics
    ((floats, step),) = plain.calls
    assert step == 7 and floats == {"loss": 0.25, "acc": 3.0, "lr": 1e-3}
    assert all(type(v) is float for v in floats.values())
    assert plain2.calls[0][0] is floats  # converted once, however many loggers want floats


def test_no_loggers_and_only_tensor_loggers_convert_nothing() -> None:
    send_metrics([], {"x": torch.ones(3)}, 0)  # nothing to hand to: not even checked
    takes = Recorder(True)
    send_metrics([takes], {"x": torch.tensor(1.5)}, 2)
    assert isinstance(takes.calls[0][0]["x"], torch.Tensor)
