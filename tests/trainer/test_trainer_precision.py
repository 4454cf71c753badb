"""Precision: autocast dtypes on CPU, the GradScaler of 16-mixed, float64 for 64-true, the names."""

from __future__ import annotations

import pytest
import torch

import ember
from helpers import TRUE_W, LinearModel, loader, quiet_trainer


class DtypeProbe(LinearModel):
    """Records the dtype of the Linear output, the params and the batch in each step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set] = {"train_out": set(), "val_out": set(), "batch": set(), "param": set()}

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.seen["train_out"].add(out.dtype)
        self.seen["batch"].add(x.dtype)
        self.seen["param"].add(self.layer.weight.dtype)
        loss = torch.nn.functional.mse_loss(out if out.dtype == torch.float64 else out.float(), y)
        self.training_step_calls += 1
        return loss

    def validation_step(self, batch, batch_idx):
        self.seen["val_out"].add(self(batch[0]).dtype)


@pytest.mark.parametrize(
    ("precision", "autocast_dtype"),
    [
        ("bf16-mixed", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("16-mixed", torch.float16),
        (16, torch.float16),
        ("16", torch.float16),
    ],
)
def test_mixed_precision_runs_on_cpu_under_autocast(tmp_path, precision, autocast_dtype):
    model = DtypeProbe()
    trainer = quiet_trainer(tmp_path, max_epochs=1, precision=precision, num_sanity_val_steps=0)
    trainer.fit(model, loader(32), loader(16))
    assert model.seen["train_out"] == {autocast_dtype}
    assert model.seen["val_out"] == {autocast_dtype}
    assert model.seen["param"] == {torch.float32}  # weights stay float32 under mixed precision
    assert model.layer.weight.dtype == torch.float32
    assert trainer.global_step == 4
    expected = "bf16-mixed" if autocast_dtype is torch.bfloat16 else "16-mixed"
    assert trainer.precision == expected


def test_16_mixed_uses_a_grad_scaler_and_bf16_does_not(tmp_path):
    t16 = quiet_trainer(tmp_path, precision="16-mixed")
    assert isinstance(t16.precision_plugin.scaler, torch.amp.GradScaler)
    assert quiet_trainer(tmp_path, precision="bf16-mixed").precision_plugin.scaler is None
    assert quiet_trainer(tmp_path).precision_plugin.scaler is None


def test_16_mixed_scales_the_loss_for_backward(tmp_path):
    checked = []

    class GradProbe(LinearModel):
        def training_step(self, batch, batch_idx):
            x, y = batch
            with torch.autocast("cpu", enabled=False):
                fp32_loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.true_grad = torch.autograd.grad(fp32_loss, self.layer.weight)[0]
            return super().training_step(batch, batch_idx)

        def on_after_backward(self):
            scale = self.trainer.precision_plugin.scaler.get_scale()
            grad = self.layer.weight.grad
            if torch.isfinite(grad).all():  # the first steps may overflow: the scaler skips them
                torch.testing.assert_close(grad / scale, self.true_grad, rtol=2e-2, atol=1e-3)
                checked.append(scale)

    torch.manual_seed(0)
    trainer = quiet_trainer(tmp_path, max_epochs=2, precision="16-mixed")
    trainer.fit(GradProbe(), loader(64))
    assert len(checked) >= 8
    assert min(checked) > 1.0  # the loss really was scaled


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_still_learns(tmp_path, precision):
    torch.manual_seed(0)
    model = LinearModel()
    quiet_trainer(tmp_path, max_epochs=20, precision=precision).fit(model, loader(64))
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=0.05)


@pytest.mark.parametrize("precision", ["64-true", 64, "64"])
def test_64_true_uses_float64_params_and_batches(tmp_path, precision):
    model = DtypeProbe()
    trainer = quiet_trainer(tmp_path, max_epochs=1, precision=precision, num_sanity_val_steps=0)
    trainer.fit(model, loader(32), loader(16))
    assert model.seen["param"] == {torch.float64}
    assert model.seen["batch"] == {torch.float64}
    assert model.seen["train_out"] == {torch.float64}
    assert model.seen["val_out"] == {torch.float64}
    assert model.layer.weight.dtype == torch.float64
    assert trainer.precision == "64-true"


def test_64_true_leaves_integer_tensors_alone(tmp_path):
    seen = []

    class Ints(LinearModel):
        def training_step(self, batch, batch_idx):
            x, y, idx = batch
            seen.append((x.dtype, idx.dtype))
            return super().training_step((x, y), batch_idx)

    x = torch.randn(8, 3)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True), torch.arange(8)), batch_size=4
    )
    quiet_trainer(tmp_path, max_epochs=1, precision="64-true").fit(Ints(), data)
    assert seen == [(torch.float64, torch.int64)] * 2


@pytest.mark.parametrize("precision", [32, "32", "32-true"])
def test_32_true_short_forms(tmp_path, precision):
    model = DtypeProbe()
    trainer = quiet_trainer(tmp_path, max_epochs=1, precision=precision)
    trainer.fit(model, loader(16))
    assert trainer.precision == "32-true"
    assert model.seen["train_out"] == {torch.float32}
    assert trainer.precision_plugin.scaler is None


@pytest.mark.parametrize("bad", ["17", 17, "fp16", "bf32", True, None, "32-mixed"])
def test_bad_precision_names_the_value_and_the_choices(tmp_path, bad):
    with pytest.raises(ValueError) as info:
        ember.Trainer(precision=bad, default_root_dir=tmp_path)
    message = str(info.value)
    assert "precision" in message
    assert repr(bad) in message
    for choice in ("'32-true'", "'16-mixed'", "'bf16-mixed'", "'64-true'"):
        assert choice in message


def test_precision_applies_in_test_and_predict(tmp_path):
    seen = []

    class Probe(LinearModel):
        def test_step(self, batch, batch_idx):
            seen.append(self(batch[0]).dtype)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch[0])

    trainer = quiet_trainer(tmp_path, precision="bf16-mixed")
    model = Probe()
    trainer.test(model, loader(16), verbose=False)
    preds = trainer.predict(model, loader(16))
    assert seen == [torch.bfloat16] * 2
    assert {p.dtype for p in preds} == {torch.bfloat16}


class GradProbe(LinearModel):
    """Records the weight's gradient in on_before_optimizer_step and in on_train_batch_end."""

    def __init__(self) -> None:
        super().__init__()
        self.before_step: list[torch.Tensor] = []
        self.batch_end: list[torch.Tensor] = []

    def on_before_optimizer_step(self, optimizer):
        self.before_step.append(self.layer.weight.grad.detach().clone())

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.batch_end.append(self.layer.weight.grad.detach().clone())


@pytest.mark.parametrize("clip", [None, 1e6])
def test_16_mixed_hooks_see_unscaled_gradients(tmp_path, clip):
    """Lightning unscales right after the closure, before ``on_before_optimizer_step``: the hook sees
    the gradients the optimizer uses (the GradScaler's initial scale is 65536)."""
    model = GradProbe()
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, precision="16-mixed", num_sanity_val_steps=0, limit_val_batches=0,
        gradient_clip_val=clip,
    )  # fmt: skip
    trainer.fit(model, loader(32))
    assert len(model.before_step) == trainer.global_step == 4
    finite = [(seen, used) for seen, used in zip(model.before_step, model.batch_end) if seen.isfinite().all()]
    assert finite  # the steps that overflowed (and were skipped) aside
    for seen, used in finite:
        torch.testing.assert_close(seen, used)
    assert trainer.precision_plugin.scaler.get_scale() > 1  # a scaler was in play
