"""``Snapshot``: what a sweep changes comes back exactly, and saved state is a CPU copy."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ember.tune.snapshot import Snapshot


def test_optimizer_and_weights_come_back_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(8, 3)).sum().backward()
    opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())
    snapshot = Snapshot(model)
    snapshot.add_optimizer(opt)
    saved = snapshot.optimizers[id(opt)][1]
    assert saved["state"][0]["exp_avg"] is not opt.state_dict()["state"][0]["exp_avg"]  # a copy, not the live tensor
    assert saved["param_groups"][0]["lr"] == 0.1
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3)).sum().backward()
        opt.step()
    snapshot.restore()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    restored = opt.state_dict()
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored["state"][0][key], opt_state["state"][0][key])
