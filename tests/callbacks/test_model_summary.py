"""The model summary shows each layer's input and output sizes when the module has an
``example_input_array``, as Lightning's ``ModelSummary`` "In sizes"/"Out sizes" columns do."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ember
from ember.callbacks.model_summary import summarize
from helpers import loader, quiet_trainer

pl = pytest.importorskip("pytorch_lightning")


def net(base: type, example: object) -> nn.Module:
    class Net(base):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8))
            self.pair = nn.Bilinear(8, 8, 2)
            self.unused = nn.Linear(2, 2)
            self.example_input_array = example

        def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
            h = self.encoder(x)
            out = self.pair(h, h)
            return out if scale is None else out * scale

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x)[:, :1], y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Net()


@pytest.mark.parametrize(
    "example",
    [torch.zeros(5, 3), (torch.zeros(4, 3), torch.ones(1)), {"x": torch.zeros(6, 3), "scale": torch.ones(1)}],
    ids=["tensor", "tuple", "dict"],
)
def test_sizes_match_lightning(example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pl.utilities.model_summary.ModelSummary(net(pl.LightningModule, example), max_depth=2)
        expected = {n: (str(i), str(o)) for n, i, o in zip(theirs.layer_names, theirs.in_sizes, theirs.out_sizes)}
    lines = summarize(net(ember.Module, example), max_depth=2).splitlines()
    assert lines[0].split()[-4:] == ["In", "sizes", "Out", "sizes"]
    ours = {}
    for line in lines[2 : 2 + len(expected)]:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        ours[cells[1]] = (cells[-2], cells[-1])
    assert ours == expected
    assert ours["unused"] == ("?", "?")  # a layer the forward pass does not call, as Lightning


def test_no_example_no_size_columns():
    assert "In sizes" not in summarize(net(ember.Module, None))


def test_summary_is_printed_on_fit_start_with_sizes(tmp_path, capsys):
    model = net(ember.Module, torch.zeros(5, 3))
    quiet_trainer(tmp_path, max_epochs=1, enable_model_summary=True).fit(model, loader(16, batch_size=8))
    out = capsys.readouterr().out
    assert "In sizes" in out and "[5, 3]" in out and "[5, 2]" in out


def test_the_example_pass_leaves_the_model_as_it_was():
    model = net(ember.Module, torch.zeros(5, 3))
    model.encoder[1].eval()  # a frozen BatchNorm
    stats = model.encoder[1].running_mean.clone()
    summarize(model)
    assert model.encoder[1].training is False and model.encoder[0].training is True and model.training is True
    assert torch.equal(model.encoder[1].running_mean, stats)  # ran in eval mode: no statistics updated
    assert all(p.grad is None for p in model.parameters())
    assert not model.encoder[0]._forward_hooks  # the size hooks are removed


def test_an_example_the_model_cannot_take_only_warns():
    model = net(ember.Module, torch.zeros(5, 7))  # wrong width
    with pytest.warns(UserWarning, match="example_input_array did not go through the model"):
        text = summarize(model)
    assert "?" in text and "total params" in text
