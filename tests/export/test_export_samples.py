"""Input samples for exports: nested samples are walked with ``ember.tree`` (container types kept)."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import pytest
import torch
from torch import nn

from ember.export.samples import expand_batch, resolve_input_sample

Pair = namedtuple("Pair", ["a", "b"])


def test_expand_batch_repeats_batch_one_tensors_anywhere_in_the_sample() -> None:
    sample = {"x": torch.ones(1, 3), "rest": [torch.zeros(1), torch.ones(4, 2), 7], "p": Pair(torch.ones(1, 2), "s")}
    out = expand_batch(sample, size=3)
    assert out["x"].shape == (3, 3) and out["rest"][0].shape == (3,)
    assert out["rest"][1].shape == (4, 2) and out["rest"][2] == 7  # larger batches and non-tensors as they were
    assert isinstance(out["p"], Pair) and out["p"].a.shape == (3, 2) and out["p"].b == "s"
    assert expand_batch(torch.tensor(5.0)).shape == ()  # a 0-d tensor has no batch axis


def test_expand_batch_keeps_container_types() -> None:
    out = expand_batch(OrderedDict(a=torch.ones(1)), size=2)
    assert type(out) is OrderedDict and out["a"].shape == (2,)
    assert type(expand_batch((torch.ones(1),))) is tuple


def test_a_sample_needs_a_tensor_somewhere() -> None:
    module = nn.Linear(2, 2)
    nested = {"a": [1, (2, torch.ones(1, 2))]}
    assert resolve_input_sample(module, nested) is nested
    with pytest.raises(TypeError, match="at least one tensor"):
        resolve_input_sample(module, {"a": [1, (2, "x")]})
