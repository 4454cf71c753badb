"""``self.log`` from every hook, Lightning against Ember: the same module (or callback) logs from one
hook, the same fit/validate/test runs, and what a user observes must be equal (the CSVLogger's rows,
``callback_metrics``/``logged_metrics``/``progress_bar_metrics``, the results of ``validate()``/``test()``)
— or, where Lightning refuses (a hook that does not log, a level the hook does not take, a value
that is not a scalar), both refuse with the same substance in the message. (``test_lightning_logging.py``
covers logging from the steps; ``test_lightning_logging_values.py`` metrics, batch sizes and options.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, regression_module
from logging_kit import assert_same, both, refusal, scenario, train_step_logging, val_step_logging

# --------------------------------------------------------------------------- logging from each hook

# hook -> the stages that run it
HOOKS = {
    "on_train_start": ("fit",),
    "on_train_epoch_start": ("fit",),
    "on_train_epoch_end": ("fit",),
    "on_train_batch_start": ("fit",),
    "on_train_batch_end": ("fit",),
    "on_before_backward": ("fit",),
    "on_after_backward": ("fit",),
    "on_before_optimizer_step": ("fit",),
    "on_before_zero_grad": ("fit",),
    "on_validation_start": ("fit", "validate"),
    "on_validation_epoch_start": ("fit", "validate"),
    "on_validation_epoch_end": ("fit", "validate"),
    "on_validation_batch_start": ("fit", "validate"),
    "on_validation_batch_end": ("fit", "validate"),
    "on_test_start": ("test",),
    "on_test_epoch_start": ("test",),
    "on_test_epoch_end": ("test",),
    "on_test_batch_start": ("test",),
    "on_test_batch_end": ("test",),
}


def counting_hook(name: str, on_callback: bool, **log_options: Any) -> Any:
    """A hook that logs ``name`` with the number of times it ran (a different value every call)."""

    def log(module: Any) -> None:
        module.calls = getattr(module, "calls", 0) + 1
        module.log(name, float(module.calls), **log_options)

    if on_callback:
        return lambda self, trainer, pl_module, *args, **kwargs: log(pl_module)
    return lambda self, *args, **kwargs: log(self)


def hooked(fw: Framework, hook: str, on_callback: bool = False, **log_options: Any) -> tuple[Any, tuple]:
    """The regression module with ``hook`` logging "h" — on the module, or on a callback."""
    base = regression_module(fw)
    if on_callback:
        callback = type("Logs", (fw.Callback,), {hook: counting_hook("h", True, **log_options)})()
        return base(), (callback,)
    return type("Logs", (base,), {hook: counting_hook("h", False, **log_options)})(), ()


@pytest.mark.parametrize("on_callback", [False, True], ids=["module", "callback"])
@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_logging_from_a_hook_with_its_defaults(tmp_path, hook, on_callback):
    # (with a sanity check: what the validation hooks log there reaches nothing)
    expected, got = both(tmp_path, lambda fw: hooked(fw, hook, on_callback), stages=HOOKS[hook], num_sanity_val_steps=1)
    assert_same(expected, got)


STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
              "on_before_optimizer_step", "on_validation_batch_end", "on_test_batch_end")  # fmt: skip


@pytest.mark.parametrize(
    "options", [dict(on_step=True, on_epoch=True), dict(on_step=False, on_epoch=True), dict(on_step=True, on_epoch=False)]
)
@pytest.mark.parametrize("hook", STEP_HOOKS)
def test_every_level_is_allowed_in_step_hooks(tmp_path, hook, options):
    stages = HOOKS[hook]
    expected, got = both(tmp_path, lambda fw: hooked(fw, hook, prog_bar=True, **options), stages=stages)
    assert_same(expected, got)


@pytest.mark.parametrize("hook", ["on_after_backward", "on_before_optimizer_step", "on_before_zero_grad", "on_train_batch_end"])
def test_step_hooks_under_gradient_accumulation(tmp_path, hook):
    # rows every log_every_n_steps optimizer steps, hooks that run per micro-batch or per window
    options = dict(accumulate_grad_batches=2, log_every_n_steps=2, max_epochs=3)
    make = lambda fw: hooked(fw, hook, on_step=True, on_epoch=True, prog_bar=True)  # noqa: E731
    expected, got = both(tmp_path, make, stages=("fit",), **options)
    assert_same(expected, got)


# --------------------------------------------------------------------------- refusals

FORBIDDEN = {
    "on_fit_start": ("fit",),
    "on_fit_end": ("fit",),
    "on_train_end": ("fit",),
    "on_validation_end": ("validate",),
    "on_test_end": ("test",),
    "on_sanity_check_start": ("fit",),
    "on_sanity_check_end": ("fit",),
    "setup": ("fit",),
    "teardown": ("fit",),
    "configure_optimizers": ("fit",),
}


def callback_hooked(fw: Framework, hook: str, **log_options: Any) -> tuple[Any, tuple]:
    return hooked(fw, hook, on_callback=True, **log_options)


@pytest.mark.parametrize("hook", sorted(FORBIDDEN))
def test_hooks_where_logging_is_refused(tmp_path, hook):
    if hook == "configure_optimizers":

        def make(fw: Framework) -> tuple[Any, tuple]:
            class Logs(regression_module(fw)):
                def configure_optimizers(self):
                    self.log("h", 1.0)
                    return super().configure_optimizers()

            return Logs(), ()
    elif hook in ("on_sanity_check_start", "on_sanity_check_end"):  # callback-only hooks
        make = lambda fw: callback_hooked(fw, hook)  # noqa: E731
    else:
        make = lambda fw: hooked(fw, hook)  # noqa: E731
    lightning = refusal(LIGHTNING, tmp_path, make, FORBIDDEN[hook])
    ember = refusal(EMBER, tmp_path, make, FORBIDDEN[hook])
    assert f"You can't `self.log()` inside `{hook}`" in str(lightning)
    # (configure_optimizers runs before the loops: Ember names it among the places that refuse)
    assert hook in str(ember) and "You can't `self.log('h')`" in str(ember), str(ember)


EPOCH_HOOKS = ("on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_validation_epoch_end",
               "on_validation_start", "on_test_epoch_end")  # fmt: skip


@pytest.mark.parametrize(
    "options, word", [(dict(on_step=True), "on_step=True"), (dict(on_epoch=False), "on_epoch=False")], ids=["on_step", "no_epoch"]
)
@pytest.mark.parametrize("hook", EPOCH_HOOKS)
def test_levels_refused_in_epoch_hooks(tmp_path, hook, options, word):
    stages = HOOKS[hook] if hook in HOOKS else ("fit",)
    make = lambda fw: hooked(fw, hook, **options)  # noqa: E731
    lightning = refusal(LIGHTNING, tmp_path, make, stages)
    ember = refusal(EMBER, tmp_path, make, stages)
    assert f"You can't `self.log({word})` inside `{hook}`" in str(lightning)
    assert word in str(ember) and f"`{hook}`" in str(ember), str(ember)


def test_neither_step_nor_epoch_is_refused(tmp_path):
    make = lambda fw: hooked(fw, "on_train_batch_end", on_step=False, on_epoch=False)  # noqa: E731
    lightning = refusal(LIGHTNING, tmp_path, make, ("fit",))
    ember = refusal(EMBER, tmp_path, make, ("fit",))
    assert "on_step=False, on_epoch=False" in str(lightning)
    assert "on_step" in str(ember) and "on_epoch" in str(ember) and "False" in str(ember)


# --------------------------------------------------------------------------- values refused

REFUSED_VALUES = {
    "non-scalar": (lambda: torch.ones(3), "must have a single element"),
    "str": (lambda: "text", "`str` values cannot be logged"),
    "dict": (lambda: {"a": 1.0}, "dict"),
    "none": (lambda: None, "`NoneType` values cannot be logged"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED_VALUES))
def test_values_that_cannot_be_logged(tmp_path, kind):
    value, substance = REFUSED_VALUES[kind]
    make = scenario(training_step=train_step_logging(lambda self, b, i, loss: self.log("bad", value())))
    lightning = refusal(LIGHTNING, tmp_path, make, ("fit",))
    ember = refusal(EMBER, tmp_path, make, ("fit",))
    assert type(ember) is ValueError and type(lightning) is ValueError
    assert substance in str(lightning) and substance in str(ember), (str(lightning), str(ember))
    assert "'bad'" in str(ember)


def test_a_custom_reduction_is_refused(tmp_path):
    make = scenario(validation_step=val_step_logging(lambda self, b, i, loss: self.log("v", loss, reduce_fx=torch.median)))
    lightning = refusal(LIGHTNING, tmp_path, make, ("validate",))
    ember = refusal(EMBER, tmp_path, make, ("validate",))
    assert "reduce_fx" in str(lightning) and "reduce_fx" in str(ember)
    assert all(word in str(ember) for word in ("mean", "sum", "max", "min")), str(ember)


def test_a_name_with_the_dataloader_suffix_is_refused(tmp_path):
    make = scenario(validation_step=val_step_logging(lambda self, b, i, loss: self.log("v/dataloader_idx_0", loss)))
    lightning = refusal(LIGHTNING, tmp_path, make, ("validate",))
    ember = refusal(EMBER, tmp_path, make, ("validate",))
    assert "dataloader_idx" in str(lightning) and "add_dataloader_idx=True" in str(ember)


def test_predict_hooks_refuse_to_log(tmp_path):
    errors = {}
    for fw in BOTH:

        class Predicts(regression_module(fw)):
            def predict_step(self, batch, batch_idx):
                self.log("p", 1.0)
                return self(batch[0])

        trainer = fw.trainer(tmp_path / fw.name)
        with pytest.raises(Exception) as info:  # (Lightning: MisconfigurationException)
            trainer.predict(Predicts(), data(8))
        errors[fw.name] = str(info.value)
    assert "predict" in errors["lightning"] and "predict" in errors["ember"]
    assert "self.log" in errors["ember"]
