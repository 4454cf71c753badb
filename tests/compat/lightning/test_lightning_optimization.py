"""Optimization parity, Lightning against Ember: manual optimization with one and two optimizers
(global_step, ``self.optimizers()``/``self.lr_schedulers()``, toggling, manual accumulation,
``clip_gradients``, the hooks around backward and the step, ``max_steps``), and automatic
optimization with schedulers (interval, frequency, when they step relative to the epoch-end hooks
and validation, ReduceLROnPlateau with a missing metric, ``lr_scheduler_step``, the return forms of
``configure_optimizers``) and ``LearningRateMonitor`` rows in a CSVLogger."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, Framework, data, quiet_fit, regression_module
from torch import nn
from torch.nn import functional as F

import ember.callbacks

MISCONFIGURED = (pl.utilities.exceptions.MisconfigurationException, ValueError, TypeError, RuntimeError)
LR_MONITORS = {"lightning": pl.callbacks.LearningRateMonitor, "ember": ember.callbacks.LearningRateMonitor}


def both(scenario: Any, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    """``scenario(fw, root, **kwargs)`` on each framework, by name."""
    return {fw.name: scenario(fw, tmp_path / fw.name, **kwargs) for fw in BOTH}


def same(results: dict[str, Any]) -> Any:
    assert results["ember"] == results["lightning"]
    return results["ember"]


# ---------------------------------------------------------------------- manual optimization


def two_optimizer_module(fw: Framework, every: int = 1, schedulers: int = 0, clip: tuple | None = None) -> Any:
    """A GAN-like module: ``a`` and ``b`` with one optimizer each, stepped in turn every ``every``
    batches (manual accumulation); records what the user can observe at each point."""

    class TwoOptimizers(fw.Module):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.a = nn.Linear(4, 1)
            self.b = nn.Linear(4, 1)
            self.seen: list[Any] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            opts = self.optimizers()
            scheds = self.lr_schedulers()
            self.seen.append(("step", batch_idx, self.global_step, self.trainer.global_step))
            self.seen.append(("types", type(opts).__name__, len(opts), [isinstance(o, torch.optim.SGD) for o in opts]))
            self.seen.append(("schedulers", scheds is None, isinstance(scheds, list), len(scheds) if isinstance(scheds, list) else 0))
            losses = []
            for i, (opt, layer) in enumerate(zip(opts, (self.a, self.b))):
                self.toggle_optimizer(opt)
                self.seen.append(("toggled", i, self.a.weight.requires_grad, self.b.weight.requires_grad))
                loss = F.mse_loss(layer(x), y) / every
                self.manual_backward(loss)
                if (batch_idx + 1) % every == 0:
                    if clip is not None:
                        self.clip_gradients(opt, gradient_clip_val=clip[0], gradient_clip_algorithm=clip[1])
                        grads = [p.grad.abs().max().item() for p in layer.parameters()]
                        self.seen.append(("clipped", i, max(grads) <= clip[0] + 1e-6))
                    opt.step()
                    opt.zero_grad()
                self.untoggle_optimizer(opt)
                self.seen.append(("untoggled", i, self.a.weight.requires_grad, self.b.weight.requires_grad))
                losses.append(loss.detach())
            return {"loss": losses[0], "other": losses[1]}

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            keys = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            grad = outputs["loss"].requires_grad if isinstance(outputs, dict) else None
            self.seen.append(("batch_end", batch_idx, self.trainer.global_step, keys, grad))

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.seen.append(("before_optimizer_step", self.which(optimizer)))

        def on_before_zero_grad(self, optimizer: Any) -> None:
            self.seen.append(("before_zero_grad", self.which(optimizer)))

        def on_after_backward(self) -> None:
            self.seen.append(("after_backward",))

        def which(self, optimizer: Any) -> int:
            raw = [o for o in self.trainer.optimizers]
            inner = getattr(optimizer, "optimizer", optimizer)
            return next(i for i, o in enumerate(raw) if o is inner or o is optimizer)

        def configure_optimizers(self) -> Any:
            opt_a = torch.optim.SGD(self.a.parameters(), lr=0.1)
            opt_b = torch.optim.SGD(self.b.parameters(), lr=0.1)
            if schedulers == 0:
                return [opt_a, opt_b]
            scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=1) for o in (opt_a, opt_b)][:schedulers]
            return [opt_a, opt_b], scheds

    return TwoOptimizers()


def run_two_optimizers(fw: Framework, root: Path, **kwargs: Any) -> dict[str, Any]:
    fit_options = {k: kwargs.pop(k) for k in list(kwargs) if k in ("max_steps", "max_epochs", "limit_train_batches")}
    module = two_optimizer_module(fw, **kwargs)
    options = {"max_epochs": 1, "limit_train_batches": 4, **fit_options}
    trainer = fw.trainer(root, **options)
    quiet_fit(trainer, module, data(64))
    weights = [p.detach().clone() for p in module.parameters()]
    return {"seen": module.seen, "global_step": trainer.global_step, "epoch": trainer.current_epoch, "w": weights}


def assert_same_run(results: dict[str, Any]) -> dict[str, Any]:
    for key in ("seen", "global_step", "epoch"):
        assert results["ember"][key] == results["lightning"][key], key
    for a, b in zip(results["ember"]["w"], results["lightning"]["w"]):
        torch.testing.assert_close(a, b)
    return results["ember"]


def test_two_optimizers_count_every_step_and_toggle_requires_grad(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        torch.manual_seed(0)
        return run_two_optimizers(fw, root)

    run = assert_same_run(both(scenario, tmp_path))
    assert run["global_step"] == 8  # two optimizer steps per batch
    assert ("toggled", 0, True, False) in run["seen"] and ("untoggled", 1, True, True) in run["seen"]
    assert ("types", "list", 2, [True, True]) in run["seen"]


@pytest.mark.parametrize("schedulers", [0, 1, 2])
def test_lr_schedulers_is_none_one_or_a_list(tmp_path: Path, schedulers: int) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        torch.manual_seed(0)
        return run_two_optimizers(fw, root, schedulers=schedulers)

    run = assert_same_run(both(scenario, tmp_path))
    expected = {0: (True, False, 0), 1: (False, False, 0), 2: (False, True, 2)}[schedulers]
    assert ("schedulers", *expected) in run["seen"]


def test_manual_accumulation_steps_every_k_batches(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        torch.manual_seed(0)
        return run_two_optimizers(fw, root, every=2, limit_train_batches=5)

    run = assert_same_run(both(scenario, tmp_path))
    assert run["global_step"] == 4  # batches 1 and 3 step both optimizers; batch 4 only accumulates


@pytest.mark.parametrize("clip", [(0.01, "norm"), (0.01, "value")], ids=["norm", "value"])
def test_clip_gradients_in_manual_optimization(tmp_path: Path, clip: tuple) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        torch.manual_seed(0)
        return run_two_optimizers(fw, root, clip=clip)

    run = assert_same_run(both(scenario, tmp_path))
    assert ("clipped", 1, True) in run["seen"]


@pytest.mark.parametrize("max_steps", [3, 4, 5])
def test_max_steps_with_two_optimizers(tmp_path: Path, max_steps: int) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        torch.manual_seed(0)
        return run_two_optimizers(fw, root, max_steps=max_steps, max_epochs=-1, limit_train_batches=None)

    run = assert_same_run(both(scenario, tmp_path))
    assert run["global_step"] == max_steps + max_steps % 2  # stops after the batch that reached it


def test_clip_gradients_conflicting_with_trainer_arguments(tmp_path: Path) -> None:
    """Automatic optimization: ``self.clip_gradients`` inside ``configure_gradient_clipping`` with a
    value other than the Trainer's is an error; None takes the Trainer's value."""

    def scenario(fw: Framework, root: Path, value: Any) -> Any:
        class Clipping(regression_module(fw)):
            def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any, gradient_clip_algorithm: Any) -> None:
                self.clip_gradients(optimizer, gradient_clip_val=value)
                self.grad = max(p.grad.abs().max().item() for p in self.parameters())

        torch.manual_seed(0)
        module = Clipping()
        options = dict(max_epochs=1, limit_train_batches=1, gradient_clip_val=0.001, gradient_clip_algorithm="value")
        trainer = fw.trainer(root, **options)
        try:
            quiet_fit(trainer, module, data(16))
        except MISCONFIGURED as err:  # Lightning: MisconfigurationException; Ember: ValueError
            return "error", "Please use only one of them" in str(err)
        return round(module.grad, 6)

    assert same(both(scenario, tmp_path, value=None)) == 0.001
    assert same(both(scenario, tmp_path, value=0.5)) == ("error", True)


# ---------------------------------------------------------------------- automatic optimization and schedulers


def scheduled_module(fw: Framework, configure: Any, extra: dict[str, Any] | None = None) -> Any:
    """The regression module with ``configure(module)`` as configure_optimizers, recording the rate
    seen by every training step, at the end of each training and validation epoch."""

    class Scheduled(regression_module(fw)):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[Any] = []

        def lr(self) -> float:
            return round(self.trainer.optimizers[0].param_groups[0]["lr"], 8)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.seen.append(("train", self.current_epoch, batch_idx, self.lr()))
            loss = super().training_step(batch, batch_idx)
            self.log("train_loss", loss)
            return loss

        def on_train_epoch_end(self) -> None:
            self.seen.append(("train_epoch_end", self.current_epoch, self.lr()))

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.seen.append(("val_epoch_end", self.current_epoch, self.lr()))

        def configure_optimizers(self) -> Any:
            return configure(self)

    return type("Scheduled", (Scheduled,), extra or {})()


def run_scheduled(
    fw: Framework, root: Path, configure: Any, extra: Any = None, quiet: bool = True, **kwargs: Any
) -> dict[str, Any]:
    torch.manual_seed(0)
    module = scheduled_module(fw, configure, extra)
    options = dict(max_epochs=3, limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)
    options.update(kwargs)
    trainer = fw.trainer(root, **options)
    (quiet_fit if quiet else type(trainer).fit)(trainer, module, data(64), data(16))
    return {"seen": module.seen, "final": [round(g["lr"], 8) for o in trainer.optimizers for g in o.param_groups]}


def step_lr(interval: str, frequency: int = 1) -> Any:
    def configure(module: Any) -> Any:
        opt = torch.optim.SGD(module.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval, "frequency": frequency}}

    return configure


@pytest.mark.parametrize("interval", ["step", "epoch"])
@pytest.mark.parametrize("frequency", [1, 2, 3])
def test_scheduler_interval_and_frequency(tmp_path: Path, interval: str, frequency: int) -> None:
    run = same(both(run_scheduled, tmp_path, configure=step_lr(interval, frequency)))
    assert run["final"][0] < 1.0


@pytest.mark.parametrize("frequency", [1, 3])
def test_step_scheduler_frequency_with_gradient_accumulation(tmp_path: Path, frequency: int) -> None:
    options = dict(accumulate_grad_batches=2, limit_train_batches=5)
    run = same(both(run_scheduled, tmp_path, configure=step_lr("step", frequency), **options))
    # batches 2, 4 and the epoch's last (5) step the optimizer; the scheduler counts batches, not steps
    assert run["final"][0] == round({1: 0.5**9, 3: 1.0}[frequency], 8)  # 2, 4, 5: never a multiple of 3


def test_epoch_scheduler_steps_before_validation_and_on_train_epoch_end(tmp_path: Path) -> None:
    run = same(both(run_scheduled, tmp_path, configure=step_lr("epoch"), max_epochs=2))
    # Lightning steps an epoch scheduler right after the epoch's last training batch
    assert ("val_epoch_end", 0, 0.5) in run["seen"] and ("train_epoch_end", 0, 0.5) in run["seen"]


def several_schedulers(module: Any) -> Any:
    opt = torch.optim.SGD(module.parameters(), lr=1.0)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 3))
    decay = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return [opt], [{"scheduler": warm, "interval": "step"}, decay]


def test_several_schedulers_on_one_optimizer(tmp_path: Path) -> None:
    same(both(run_scheduled, tmp_path, configure=several_schedulers))


def plateau(monitor: str, strict: bool = True, interval: str = "epoch") -> Any:
    def configure(module: Any) -> Any:
        opt = torch.optim.SGD(module.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        cfg = {"scheduler": sched, "monitor": monitor, "strict": strict, "interval": interval}
        return {"optimizer": opt, "lr_scheduler": cfg}

    return configure


def plateau_outcome(fw: Framework, root: Path, **kwargs: Any) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = run_scheduled(fw, root, quiet=False, **kwargs)
        except MISCONFIGURED as err:
            return "error", "not available" in str(err) or "not logged" in str(err)
    skipped = any("val_loss" in str(w.message) and issubclass(w.category, RuntimeWarning) for w in caught)
    return result, skipped


@pytest.mark.parametrize("strict", [True, False])
def test_plateau_with_a_metric_logged_every_other_epoch(tmp_path: Path, strict: bool) -> None:
    options = dict(check_val_every_n_epoch=2, max_epochs=4)
    outcome = same(both(plateau_outcome, tmp_path, configure=plateau("val_loss", strict), **options))
    if strict:
        assert outcome == ("error", True)
    else:
        assert outcome[1] is True  # warned, skipped


def test_plateau_on_a_validation_metric_every_epoch(tmp_path: Path) -> None:
    result, skipped = same(both(plateau_outcome, tmp_path, configure=plateau("val_loss")))
    assert not skipped and result["final"][0] < 1.0  # lr=1.0 diverges: halved at each epoch that got worse


def test_plateau_stepping_per_step_on_a_training_metric(tmp_path: Path) -> None:
    result, skipped = same(both(plateau_outcome, tmp_path, configure=plateau("train_loss", interval="step")))
    assert not skipped and result["final"][0] < 1.0


def test_overridden_lr_scheduler_step(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        calls: list[Any] = []

        def lr_scheduler_step(module: Any, scheduler: Any, metric: Any) -> None:
            name = type(scheduler).__name__
            calls.append((name, module.global_step, None if metric is None else round(float(metric), 4)))
            scheduler.step(metric) if metric is not None else scheduler.step()

        def configure(module: Any) -> Any:
            opt = torch.optim.SGD(module.parameters(), lr=1.0)
            plat = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
            step = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
            return [opt], [{"scheduler": plat, "monitor": "val_loss"}, {"scheduler": step, "interval": "step", "frequency": 2}]

        run_scheduled(fw, root, configure=configure, extra={"lr_scheduler_step": lr_scheduler_step}, max_epochs=2)
        return calls

    calls = same(both(scenario, tmp_path))
    assert [c[0] for c in calls].count("ReduceLROnPlateau") == 2 and len(calls) == 6


class CustomScheduler:
    """Not a torch scheduler (no ``LRScheduler`` base): halves the rate at each ``step()``."""

    def __init__(self, optimizer: Any, stateful: bool = True) -> None:
        self.optimizer = optimizer
        if stateful:
            self.state_dict, self.load_state_dict = dict, lambda state: None

    def step(self, *args: Any) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] /= 2


def custom_scheduler_outcome(fw: Framework, root: Path, override: bool, stateful: bool = True) -> Any:
    def configure(module: Any) -> Any:
        opt = torch.optim.SGD(module.parameters(), lr=1.0)
        return [opt], [CustomScheduler(opt, stateful)]

    extra = {"lr_scheduler_step": lambda self, scheduler, metric: scheduler.step()} if override else None
    try:
        return run_scheduled(fw, root, configure=configure, extra=extra, max_epochs=2)["final"]
    except MISCONFIGURED as err:
        return "error", type(err).__name__


def test_a_custom_scheduler_with_lr_scheduler_step_overridden(tmp_path: Path) -> None:
    assert same(both(custom_scheduler_outcome, tmp_path, override=True)) == [0.25]


def test_a_custom_scheduler_without_state_dict_is_an_error(tmp_path: Path) -> None:
    outcome = both(custom_scheduler_outcome, tmp_path, override=True, stateful=False)
    assert outcome["lightning"] == ("error", "TypeError") and outcome["ember"] == ("error", "TypeError")


def test_a_custom_scheduler_steps_without_lr_scheduler_step_overridden(tmp_path: Path) -> None:
    """Deliberate difference: Lightning refuses a scheduler that is not a torch ``LRScheduler`` unless
    the module overrides ``lr_scheduler_step``; Ember calls its ``step()`` as it would a torch one."""
    outcome = both(custom_scheduler_outcome, tmp_path, override=False)
    assert outcome["lightning"] == ("error", "MisconfigurationException")
    assert outcome["ember"] == [0.25]


@pytest.mark.parametrize("form", ["tuple_of_lists", "list_of_dicts", "dict_bare_scheduler", "tuple_of_singletons"])
def test_configure_optimizers_return_forms(tmp_path: Path, form: str) -> None:
    def configure(module: Any) -> Any:
        opt = torch.optim.SGD(module.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {
            "tuple_of_lists": ([opt], [sched]),
            "list_of_dicts": [{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}],
            "dict_bare_scheduler": {"optimizer": opt, "lr_scheduler": sched},
            "tuple_of_singletons": (opt, sched),
        }[form]

    def scenario(fw: Framework, root: Path) -> Any:
        try:
            return run_scheduled(fw, root, configure=configure, max_epochs=2)
        except MISCONFIGURED:
            return "error"

    same(both(scenario, tmp_path))


# ---------------------------------------------------------------------- LearningRateMonitor


def monitor_rows(fw: Framework, root: Path, configure: Any, **monitor: Any) -> list[dict[str, str]]:
    torch.manual_seed(0)
    module = scheduled_module(fw, configure)
    logger = fw.CSVLogger(str(root), name="lr", version=0)
    callback = LR_MONITORS[fw.name](**monitor)
    options = dict(max_epochs=2, limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)
    trainer = fw.trainer(root, log_every_n_steps=2, logger=logger, callbacks=[callback], **options)
    quiet_fit(trainer, module, data(64), data(16))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keep = [k for k in rows[0] if k.startswith("lr-") or k in ("step", "epoch")]
    out = [{k: row[k] for k in keep if row[k] != ""} for row in rows]
    return [r for r in out if any(k.startswith("lr-") for k in r)]


def groups_and_two_optimizers(module: Any) -> Any:
    groups = [{"params": [module.layer.weight]}, {"params": [module.layer.bias], "lr": 0.5}]
    a = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    b = torch.optim.Adam(module.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(a, step_size=1, gamma=0.5)
    return [a, b], [{"scheduler": sched, "interval": "step"}]


@pytest.mark.parametrize("interval", ["step", "epoch", None])
@pytest.mark.parametrize("configure", [step_lr("step"), step_lr("epoch")], ids=["step_sched", "epoch_sched"])
def test_learning_rate_monitor_rows(tmp_path: Path, interval: Any, configure: Any) -> None:
    same(both(monitor_rows, tmp_path, configure=configure, logging_interval=interval))


@pytest.mark.parametrize("interval", ["step", "epoch", None])
def test_learning_rate_monitor_groups_momentum_and_unscheduled_optimizers(tmp_path: Path, interval: Any) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        module_type = two_optimizer_module(fw).__class__  # a manual module: two optimizers are allowed

        class Monitored(module_type):
            def __init__(self) -> None:
                super().__init__()
                self.layer = self.a

            def configure_optimizers(self) -> Any:
                return groups_and_two_optimizers(self)

            def validation_step(self, batch: Any, batch_idx: int) -> None:
                pass

        torch.manual_seed(0)
        module = Monitored()
        logger = fw.CSVLogger(str(root), name="lr", version=0)
        callback = LR_MONITORS[fw.name](logging_interval=interval, log_momentum=True)
        options = dict(max_epochs=2, limit_train_batches=4, limit_val_batches=1, log_every_n_steps=2)
        trainer = fw.trainer(root, logger=logger, callbacks=[callback], **options)
        quiet_fit(trainer, module, data(64), data(16))
        with open(Path(logger.log_dir) / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        return sorted(rows[0]), [{k: v for k, v in row.items() if v != ""} for row in rows]

    same(both(scenario, tmp_path))
