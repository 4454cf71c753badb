"""Hook order and hook arguments, Lightning against Ember: the same recording module and callbacks,
the same fit/validate/test, and the call sequences must be equal."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module

MODULE_HOOKS = (
    "setup", "teardown", "configure_model", "configure_optimizers",
    "on_fit_start", "on_fit_end", "on_train_start", "on_train_end",
    "on_train_epoch_start", "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start", "on_validation_epoch_end",
    "on_validation_batch_start", "on_validation_batch_end", "on_validation_model_eval", "on_validation_model_train",
    "on_test_start", "on_test_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_test_batch_start", "on_test_batch_end", "on_test_model_eval", "on_test_model_train",
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
    "training_step", "validation_step", "test_step", "optimizer_step", "optimizer_zero_grad", "backward",
)  # fmt: skip
CALLBACK_HOOKS = (
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end",
    "on_train_start", "on_train_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_train_batch_start", "on_train_batch_end", "on_validation_start", "on_validation_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_start", "on_test_end", "on_test_epoch_start", "on_test_epoch_end", "on_test_batch_start",
    "on_test_batch_end", "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
)  # fmt: skip


def recording_module(fw: Framework, log: list) -> Any:
    base = regression_module(fw)

    def recorder(name: str) -> Any:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            log.append(("module", name))
            return getattr(base, name)(self, *args, **kwargs)

        return hook

    cls = type("Recording", (base,), {name: recorder(name) for name in MODULE_HOOKS if hasattr(base, name)})
    return cls()


def recording_callback(fw: Framework, log: list, tag: str) -> Any:
    def recorder(name: str) -> Any:
        def hook(self: Any, *args: Any, **kwargs: Any) -> None:
            log.append((tag, name))

        return hook

    return type("Recorder", (fw.Callback,), {name: recorder(name) for name in CALLBACK_HOOKS})()


def fit_log(fw: Framework, tmp_path: Any, **trainer_kwargs: Any) -> list:
    torch.manual_seed(0)
    log: list = []
    module = recording_module(fw, log)
    callbacks = [recording_callback(fw, log, "cb1"), recording_callback(fw, log, "cb2")]
    trainer = fw.trainer(tmp_path / fw.name, callbacks=callbacks, **trainer_kwargs)
    quiet_fit(trainer, module, data(32), data(16))
    trainer.validate(module, data(16), verbose=False)
    trainer.test(module, data(16), verbose=False)
    return log


def first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"at {i}: lightning {x} != ember {y}\n  lightning: {a[max(0, i - 4) : i + 4]}\n  ember:     {b[max(0, i - 4) : i + 4]}"
    return f"lengths differ: lightning {len(a)}, ember {len(b)}; tails {a[len(b) :][:6]} / {b[len(a) :][:6]}"


@pytest.mark.parametrize(
    "options",
    [
        dict(max_epochs=2, num_sanity_val_steps=1, limit_train_batches=2, limit_val_batches=1),
        dict(max_epochs=1, accumulate_grad_batches=2, limit_val_batches=1, num_sanity_val_steps=0),
        dict(max_epochs=1, gradient_clip_val=0.5, num_sanity_val_steps=0, limit_train_batches=2),
        dict(max_steps=3, num_sanity_val_steps=0, val_check_interval=2),
    ],
    ids=["two-epochs-sanity", "accumulate-2", "clipping", "max-steps-val-interval"],
)
def test_fit_validate_test_hook_sequences_match(tmp_path, options):
    expected = fit_log(LIGHTNING, tmp_path, **options)
    got = fit_log(EMBER, tmp_path, **options)
    assert got == expected, first_difference(expected, got)


def test_train_batch_end_outputs_hold_the_detached_loss(tmp_path):
    seen: dict[str, list] = {}
    for fw in BOTH:
        outputs: list = []

        class Probe(fw.Callback):
            def on_train_batch_end(self, trainer, pl_module, out, batch, batch_idx, outputs=outputs):
                outputs.append(out)

        class DictStep(regression_module(fw)):
            def training_step(self, batch, batch_idx):
                return {"loss": super().training_step(batch, batch_idx), "extra": batch_idx}

        torch.manual_seed(0)
        quiet_fit(fw.trainer(tmp_path / fw.name, max_epochs=1, callbacks=[Probe()]), DictStep(), data(16))
        seen[fw.name] = outputs
    for lit, emb in zip(seen["lightning"], seen["ember"], strict=True):
        assert sorted(lit) == sorted(emb) == ["extra", "loss"]
        assert lit["extra"] == emb["extra"]
        assert not emb["loss"].requires_grad and not lit["loss"].requires_grad
        torch.testing.assert_close(emb["loss"], lit["loss"])


def test_hooks_assigned_on_the_instance_are_called(tmp_path):
    calls: dict[str, list] = {}
    for fw in BOTH:
        module = regression_module(fw)()
        seen: list = []
        module.on_train_epoch_start = lambda seen=seen: seen.append("epoch start")
        quiet_fit(fw.trainer(tmp_path / fw.name, max_epochs=2), module, data(16))
        calls[fw.name] = seen
    assert calls["ember"] == calls["lightning"] == ["epoch start", "epoch start"]


@pytest.mark.parametrize("returns_from", ["module", "callback"])
def test_minus_one_from_on_train_batch_start(tmp_path, returns_from):
    """The module's -1 ends the epoch; a callback's answer is ignored (Lightning reads only the module's)."""
    steps: dict[str, list[int]] = {}
    for fw in BOTH:
        seen: list[int] = []

        def answer(trainer: Any, batch_idx: int) -> Any:
            return -1 if trainer.current_epoch == 1 and batch_idx == 1 else None

        class Skipper(fw.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                return answer(trainer, batch_idx) if returns_from == "callback" else None

        class Model(regression_module(fw)):
            def on_train_batch_start(self, batch, batch_idx):
                return answer(self.trainer, batch_idx) if returns_from == "module" else None

            def training_step(self, batch, batch_idx, seen=seen):
                seen.append(batch_idx)
                return super().training_step(batch, batch_idx)

        trainer = fw.trainer(tmp_path / fw.name / returns_from, max_epochs=3, callbacks=[Skipper()])
        quiet_fit(trainer, Model(), data(32))
        steps[fw.name] = [*seen, trainer.global_step]
    assert steps["ember"] == steps["lightning"]
    assert len(steps["lightning"]) - 1 == (9 if returns_from == "module" else 12)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(accumulate_grad_batches=2), dict(accumulate_grad_batches=3), dict(gradient_clip_val=0.5),
     dict(accumulate_grad_batches=2, gradient_clip_val=0.5), dict(override_step=True)],
    ids=str,
)  # fmt: skip
def test_training_step_returning_none(tmp_path, options):
    """Skipped batches (``training_step`` returns None): the steps counted, the weights after each
    batch, the outputs, and when zero_grad / on_before_optimizer_step run."""
    options = dict(options)
    override_step = options.pop("override_step", False)
    runs = {}
    for fw in BOTH:
        seen: list = []

        class Probe(fw.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, seen=seen):
                weight = round(float(pl_module.layer.weight.sum()), 5)
                seen.append(("end", batch_idx, trainer.global_step, weight, sorted(outputs)))

            def on_before_zero_grad(self, trainer, pl_module, optimizer, seen=seen):
                seen.append(("zero_grad", trainer.global_step))

            def on_before_optimizer_step(self, trainer, pl_module, optimizer, seen=seen):
                seen.append(("before_step", trainer.global_step))

        class Model(regression_module(fw)):
            def training_step(self, batch, batch_idx):
                loss = super().training_step(batch, batch_idx)
                return None if batch_idx in (1, 4) else loss

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

            if override_step:

                def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
                    optimizer.step(closure=optimizer_closure)

        torch.manual_seed(0)
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=2, callbacks=[Probe()], **options)
        quiet_fit(trainer, Model(), data(48))
        runs[fw.name] = (seen, trainer.global_step)
    assert runs["ember"] == runs["lightning"]
