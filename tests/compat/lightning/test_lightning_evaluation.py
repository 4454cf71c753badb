"""Evaluation entry points and checkpoint contents, Lightning against Ember: which weights
``validate()``/``test()``/``predict()`` use (after ``fit``, with ``ckpt_path`` ``None``/``"best"``/
``"last"``, with or without a model), data as a datamodule or loaders, the dataloader_idx signature
check, the printed results table; ``trainer.state`` and the grad mode inside each stage's hooks; the
hook sequences of the evaluation stages; what a checkpoint holds (the keys a user reads), and
``load_from_checkpoint``."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module
from torch import nn

import ember

SCRIPTED = (3.0, 1.0, 2.0)  # the val_loss fit's ModelCheckpoint sees: epoch 1 is the best, epoch 2 the last


def scripted(fw: Framework) -> Any:
    """Regression whose ``val_loss`` inside fit is ``SCRIPTED[epoch]`` (the real loss elsewhere)."""

    class Scripted(regression_module(fw)):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            if self.trainer.state.fn == "fit":
                self.log("val_loss", torch.tensor(SCRIPTED[self.current_epoch]))
            else:
                super().validation_step(batch, batch_idx)

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return self(batch[0])

    torch.manual_seed(0)
    return Scripted()


def builtin_type(err: Exception) -> str:
    """The built-in exception an error is (Ember's CheckpointError is a ValueError)."""
    return next(c.__name__ for c in type(err).__mro__ if c.__module__ == "builtins")


def quiet(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """``fn(...)``'s result (or its error's type) and the warnings about which weights were used."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(*args, **kwargs)
        except Exception as err:  # the type is what is compared
            out = builtin_type(err)
    return out, [str(w.message) for w in caught if "ckpt_path" in str(w.message)]


def evaluated(trainer: Any, stage: str, **kwargs: Any) -> tuple[Any, str, list[str]]:
    """(result, the file loaded, the warnings) of one evaluation call."""
    if stage != "predict":
        kwargs["verbose"] = False
    out, said = quiet(getattr(trainer, stage), dataloaders=data(16), **kwargs)
    if stage == "predict" and isinstance(out, list):
        out = [round(float(t.sum()), 4) for t in out]
    return out, os.path.basename(trainer.ckpt_path or ""), said


def after_fit(fw: Framework, root: Path, checkpointing: bool = True) -> tuple[Any, Any]:
    callbacks = [fw.ModelCheckpoint(dirpath=str(root / "c"), monitor="val_loss")] if checkpointing else []
    trainer = fw.trainer(root, max_epochs=3, enable_checkpointing=checkpointing, callbacks=callbacks, num_sanity_val_steps=0)
    module = scripted(fw)
    quiet_fit(trainer, module, data(32), data(16))
    return trainer, module


# ---------------------------------------------------------------------- which weights are evaluated


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_without_a_model_after_fit_the_best_checkpoint_is_used(tmp_path: Path, stage: str) -> None:
    seen = []
    for fw in BOTH:
        trainer, module = after_fit(fw, tmp_path / fw.name)
        last_weights = module.layer.weight.detach().clone()
        result, loaded, said = evaluated(trainer, stage)
        best = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)["state_dict"]
        assert not torch.equal(best["layer.weight"], last_weights)  # the scenario tells best from last
        assert torch.equal(module.layer.weight, best["layer.weight"])
        seen.append((result, loaded, said))
    assert seen[1] == seen[0]
    assert seen[0][1] == "epoch=1-step=8.ckpt"
    assert seen[0][2] == [
        f"`.{stage}(ckpt_path=None)` was called without a model. The best model of the previous `fit` call will be "
        f"used. You can pass `.{stage}(ckpt_path='best')` to use the best model or `.{stage}(ckpt_path='last')` to "
        "use the last model. If you pass a value, this warning will be silenced."
    ]


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_best_and_a_given_model_after_fit(tmp_path: Path, stage: str) -> None:
    seen = []
    for fw in BOTH:
        trainer, module = after_fit(fw, tmp_path / fw.name)
        given = evaluated(trainer, stage, model=module)  # the model as it is, nothing loaded, no warning
        best = evaluated(trainer, stage, ckpt_path="best")
        seen.append((given, best))
    assert seen[1] == seen[0]
    assert seen[0][0][1:] == ("", []) and seen[0][1][1:] == ("epoch=1-step=8.ckpt", [])


def test_pinned_without_a_best_checkpoint_the_current_weights_are_used(tmp_path: Path) -> None:
    """Lightning turns ``validate()`` without a model into ``ckpt_path="best"`` even when no
    ModelCheckpoint saved one, and raises; Ember evaluates the model's current weights, with a warning."""
    lightning, _ = after_fit(LIGHTNING, tmp_path / "lightning", checkpointing=False)
    assert evaluated(lightning, "validate")[0] == "ValueError"
    trainer, module = after_fit(EMBER, tmp_path / "ember", checkpointing=False)
    weights = module.layer.weight.detach().clone()
    result, loaded, said = evaluated(trainer, "validate")
    assert isinstance(result, list) and loaded == "" and torch.equal(module.layer.weight, weights)
    assert said and "current weights are used" in said[0]
    for fw in BOTH:  # "best" asked for explicitly: an error on both
        trainer, _ = after_fit(fw, tmp_path / f"{fw.name}-best", checkpointing=False)
        assert evaluated(trainer, "test", ckpt_path="best")[0] == "ValueError"


def test_pinned_last_is_the_newest_checkpoint_of_the_run(tmp_path: Path) -> None:
    """Migration guide item 6: without ``save_last`` Lightning finds no "last" file and evaluates the
    current weights with a warning; Ember loads the newest checkpoint where the run's go."""
    lightning, _ = after_fit(LIGHTNING, tmp_path / "lightning")
    assert evaluated(lightning, "validate", ckpt_path="last")[1] == ""
    trainer, _ = after_fit(EMBER, tmp_path / "ember")
    assert evaluated(trainer, "validate", ckpt_path="last")[1] == "epoch=1-step=8.ckpt"


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_without_a_model_before_any_run_is_a_type_error(tmp_path: Path, stage: str) -> None:
    for fw in BOTH:
        assert evaluated(fw.trainer(tmp_path / fw.name), stage)[0] == "TypeError"


# ---------------------------------------------------------------------- data and results


def datamodule(fw: Framework, loaders: Any) -> Any:
    base = pl.LightningDataModule if fw is LIGHTNING else ember.DataModule

    class Data(base):
        def val_dataloader(self) -> Any:
            return loaders

        test_dataloader = val_dataloader

    return Data()


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_a_datamodule_as_keyword_or_positional_and_loaders_give_the_same_results(tmp_path: Path, stage: str) -> None:
    seen = []
    for fw in BOTH:

        class TwoLoaders(regression_module(fw)):
            def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                super().validation_step(batch, batch_idx)

            def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                super().test_step(batch, batch_idx)

        torch.manual_seed(0)
        module, trainer = TwoLoaders(), fw.trainer(tmp_path / fw.name)
        run = getattr(trainer, stage)
        loaders = [data(16), data(8, seed=3)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = [
                run(module, loaders, verbose=False),
                run(module, datamodule=datamodule(fw, loaders), verbose=False),
                run(module, datamodule(fw, loaders), verbose=False),
                run(module, data(16), verbose=False),
            ]
        seen.append(results)
    assert seen[1] == seen[0]
    key = "val_loss" if stage == "validate" else "test_loss"
    assert [sorted(r) for r in seen[0][0]] == [[f"{key}/dataloader_idx_0"], [f"{key}/dataloader_idx_1"]]
    assert seen[0][0] == seen[0][1] == seen[0][2]


@pytest.mark.parametrize(
    "case",
    [
        ("validation_step", "(self, batch, batch_idx)", 2),
        ("validation_step", "(self, batch, batch_idx, dataloader_idx)", 1),
        ("validation_step", "(self, batch, batch_idx, *args)", 2),
        ("on_validation_batch_end", "(self, outputs, batch, batch_idx)", 2),
        ("test_step", "(self, batch, batch_idx)", 2),
        ("predict_step", "(self, batch, batch_idx)", 2),
        ("on_predict_batch_start", "(self, batch, batch_idx, dataloader_idx)", 1),
    ],
    ids=lambda c: f"{c[0]}{c[1]}x{c[2]}",
)
def test_the_dataloader_idx_signature_is_checked_before_any_hook(tmp_path: Path, case: tuple) -> None:
    hook, signature, n_loaders = case
    stage = "validate" if "validation" in hook else "test" if "test" in hook else "predict"
    outcomes = []
    for fw in BOTH:
        started: list[str] = []
        namespace: dict[str, Any] = {}
        exec(f"def {hook}{signature}:\n    return self(batch[0]) if 'step' in '{hook}' else None", namespace)
        prefix = "validation" if stage == "validate" else stage
        body = {hook: namespace[hook], f"on_{prefix}_start": lambda self, started=started: started.append("start")}
        module = type("Checked", (regression_module(fw),), body)()
        loaders = [data(8), data(8)][:n_loaders]
        kwargs = {} if stage == "predict" else {"verbose": False}
        out, _ = quiet(getattr(fw.trainer(tmp_path / fw.name), stage), module, loaders if n_loaders > 1 else loaders[0], **kwargs)
        outcomes.append((out if isinstance(out, str) else "ok", started))
    assert outcomes[1] == outcomes[0]
    assert outcomes[0] == (("ok", ["start"]) if "*args" in signature else ("RuntimeError", []))


def test_the_printed_results_table_has_lightnings_sections_and_keys(tmp_path: Path) -> None:
    printed = []
    for fw in BOTH:

        class TwoLoaders(regression_module(fw)):
            def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                super().validation_step(batch, batch_idx)
                if dataloader_idx == 1:
                    self.log("only_second", 1.0)

        torch.manual_seed(0)
        trainer, out = fw.trainer(tmp_path / fw.name), io.StringIO()
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.validate(TwoLoaders(), [data(16), data(8, seed=3)])
            trainer.test(TwoLoaders(), data(16))
            trainer.validate(regression_module(fw)(), data(16), verbose=False)
        words = [line.strip("┃│ \n").split() for line in out.getvalue().splitlines()]
        printed.append([w for w in words if w and not set("".join(w)) <= set("━┏┳┓┡╇┩└┴┘─")])
    ember_rows = [[c.strip("┃│") for c in row if c.strip("┃│")] for row in printed[1]]
    lightning_rows = [[c.strip("┃│") for c in row if c.strip("┃│")] for row in printed[0]]
    assert ember_rows == lightning_rows
    assert lightning_rows[0] == ["Validate", "metric", "DataLoader", "0", "DataLoader", "1"]
    assert [r[0] for r in lightning_rows] == ["Validate", "only_second", "val_loss", "Test", "test_loss"]


# ---------------------------------------------------------------------- state and grad mode in hooks


def observed_state(fw: Framework, root: Path, inference_mode: bool) -> list[tuple]:
    seen: list[tuple] = []

    def look(where: str, trainer: Any, module: Any) -> None:
        state = trainer.state
        seen.append((
            where, str(state.fn), str(state.stage), str(state.status), trainer.training, trainer.validating,
            trainer.testing, trainer.predicting, trainer.sanity_checking, module.training,
            torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
        ))  # fmt: skip

    class Module(regression_module(fw)):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            look("validation_step", self.trainer, self)
            super().validation_step(batch, batch_idx)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            look("test_step", self.trainer, self)
            super().test_step(batch, batch_idx)

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            look("predict_step", self.trainer, self)
            return self(batch[0])

    hooks = [
        "setup", "teardown", "on_fit_start", "on_sanity_check_start", "on_sanity_check_end", "on_train_start",
        "on_validation_start", "on_validation_epoch_end", "on_test_start", "on_test_epoch_end",
        "on_predict_start", "on_predict_epoch_end", "on_fit_end",
    ]  # fmt: skip
    body = {h: (lambda h: lambda self, trainer, module, *a, **k: look(h, trainer, module))(h) for h in hooks}  # noqa: B023
    trainer = fw.trainer(root, max_epochs=1, callbacks=[type("Look", (fw.Callback,), body)()], num_sanity_val_steps=1,
                         limit_val_batches=1, limit_test_batches=1, limit_predict_batches=1, inference_mode=inference_mode)  # fmt: skip
    module = Module()
    quiet_fit(trainer, module, data(16), data(16))
    seen.append(("after fit", module.training, str(trainer.state.stage), str(trainer.state.status)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for stage in ("validate", "test", "predict"):
            getattr(trainer, stage)(module, data(16), **({} if stage == "predict" else {"verbose": False}))
            seen.append((f"after {stage}", module.training, str(trainer.state.fn), str(trainer.state.stage)))
        module.eval()
        trainer.validate(module, data(16), verbose=False)
        seen.append(("after validate in eval mode", module.training))
    return seen


@pytest.mark.parametrize("inference_mode", [True, False])
def test_state_flags_and_grad_mode_inside_each_stage(tmp_path: Path, inference_mode: bool) -> None:
    lightning, ember_ = (observed_state(fw, tmp_path / fw.name, inference_mode) for fw in BOTH)
    assert ember_ == lightning
    steps = {row[0]: row for row in lightning if row[0].endswith("_step")}
    assert steps["test_step"][-1] is inference_mode  # validate/test/predict: inference_mode
    fit_validation = [row for row in lightning if row[0] == "validation_step" and row[1] == "TrainerFn.FITTING"]
    assert all(row[-2:] == (False, False) for row in fit_validation)  # inside fit: no_grad, as Lightning
    setups = [row[:3] for row in lightning if row[0] == "setup"]  # the stage is set from setup on
    assert setups[:2] == [("setup", "TrainerFn.FITTING", "RunningStage.TRAINING"),
                          ("setup", "TrainerFn.VALIDATING", "RunningStage.VALIDATING")]  # fmt: skip
    sanity = [row for row in lightning if row[0].startswith("on_sanity_check")]
    assert all(row[2] == "RunningStage.SANITY_CHECKING" and row[8] for row in sanity)


# ---------------------------------------------------------------------- hook sequences

EVAL_HOOKS = [
    f"on_{p}_{w}" for p in ("validation", "test", "predict")
    for w in ("start", "end", "epoch_start", "epoch_end", "batch_start", "batch_end", "model_eval", "model_train")
]  # fmt: skip
MODULE_HOOKS = ["setup", "teardown", "prepare_data", "configure_model", "configure_callbacks",
                "on_before_batch_transfer", "on_after_batch_transfer", *EVAL_HOOKS]  # fmt: skip
CALLBACK_HOOKS = ["setup", "teardown", *(h for h in EVAL_HOOKS if "model_" not in h)]


def describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    return value if isinstance(value, (int, str, float, type(None))) else type(value).__name__


def datamodule_recorder(log: list, name: str, loaders: Any) -> Any:
    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        log.append(("datamodule", name, *args, *kwargs.items()))
        return loaders

    return hook


def hook_log(fw: Framework, root: Path, stage: str, n_loaders: int, with_datamodule: bool) -> list:
    log: list = []
    base = regression_module(fw)

    def recorder(name: str, who: str) -> Any:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            shown = args[2:] if who == "callback" else args
            log.append((who, name, *describe(list(shown)), *sorted(describe(kwargs).items())))
            parent = getattr(base, name, None) if who == "module" else None
            return parent(self, *args, **kwargs) if callable(parent) else ([] if name == "configure_callbacks" else None)

        return hook

    def step(name: str) -> Any:
        def run(self: Any, batch: Any, batch_idx: int, *rest: Any) -> Any:
            log.append(("module", name, batch_idx, *rest))
            return self(batch[0]) if name == "predict_step" else None

        return run

    body = {h: recorder(h, "module") for h in MODULE_HOOKS if hasattr(base, h) or h == "prepare_data"}
    body.update({s: step(s) for s in ("validation_step", "test_step", "predict_step")})
    module_cls = type("Recording", (base,), body)
    callback = type("Recorder", (fw.Callback,), {h: recorder(h, "callback") for h in CALLBACK_HOOKS})()
    trainer = fw.trainer(root, callbacks=[callback])
    torch.manual_seed(0)
    loaders = [data(8, 4, seed=i) for i in range(n_loaders)] if n_loaders > 1 else data(8, 4)
    data_arg: dict[str, Any] = {"dataloaders": loaders}
    if with_datamodule:
        dm_base = pl.LightningDataModule if fw is LIGHTNING else ember.DataModule
        names = ("prepare_data", "setup", "teardown", f"{'val' if stage == 'validate' else stage}_dataloader")
        dm_body = {n: datamodule_recorder(log, n, loaders) for n in names}
        data_arg = {"datamodule": type("Data", (dm_base,), dm_body)()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(trainer, stage)(module_cls(), **data_arg, **({} if stage == "predict" else {"verbose": False}))
    log.append(("returned", describe(out)))
    return log


@pytest.mark.parametrize("with_datamodule", [False, True], ids=["loaders", "datamodule"])
@pytest.mark.parametrize("n_loaders", [1, 2])
@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_hook_sequences_match(tmp_path: Path, stage: str, n_loaders: int, with_datamodule: bool) -> None:
    lightning, ember_ = (hook_log(fw, tmp_path / fw.name, stage, n_loaders, with_datamodule) for fw in BOTH)
    assert ember_[:-1] == lightning[:-1]
    if stage == "predict":
        assert ember_[-1] == lightning[-1]
    assert ("callback", "setup", ("stage", stage)) in lightning  # setup(stage=...) as a keyword


# ---------------------------------------------------------------------- checkpoint contents


def saved_checkpoints(fw: Framework, root: Path) -> tuple[dict[str, dict], list]:
    seen: list = []

    class WithHparams(regression_module(fw)):
        def __init__(self, hidden: int = 3, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            seen.append(sorted(k for k in checkpoint if k in USER_KEYS))
            checkpoint["mine"] = {"note": 1}

    cb = fw.ModelCheckpoint(dirpath=str(root / "c"), monitor="val_loss", filename="best")
    steps = fw.ModelCheckpoint(dirpath=str(root / "s"), every_n_train_steps=3)
    trainer = fw.trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=[cb, steps, fw.EarlyStopping(monitor="val_loss")],
                         num_sanity_val_steps=0)  # fmt: skip
    torch.manual_seed(0)
    quiet_fit(trainer, WithHparams(hidden=5), data(32), data(16))
    trainer.save_checkpoint(str(root / "full.ckpt"))
    trainer.save_checkpoint(str(root / "weights.ckpt"), weights_only=True)
    files = {name: torch.load(root / name, weights_only=False) for name in ("c/best.ckpt", "full.ckpt", "weights.ckpt")}
    return files, seen


USER_KEYS = ("epoch", "global_step", "state_dict", "hyper_parameters", "optimizer_states", "lr_schedulers", "callbacks", "loops")


def test_checkpoint_contents_a_user_reads(tmp_path: Path) -> None:
    (lightning, l_seen), (ember_, e_seen) = (saved_checkpoints(fw, tmp_path / fw.name) for fw in BOTH)
    for name in lightning:
        theirs, ours = lightning[name], ember_[name]
        for key in ("epoch", "global_step", "hyper_parameters", "mine"):
            assert ours[key] == theirs[key], (name, key)
        assert sorted(ours["state_dict"]) == sorted(theirs["state_dict"])
        shared = [k for k in USER_KEYS if k != "loops"]
        assert [k for k in shared if k in ours] == [k for k in shared if k in theirs], name
        if "callbacks" in theirs:  # state keys as Lightning's: the ModelCheckpoint's name holds its triggers
            assert sorted(ours["callbacks"]) == sorted(theirs["callbacks"])
            assert len(ours["callbacks"]) == 3
    assert (lightning["full.ckpt"]["epoch"], lightning["full.ckpt"]["global_step"]) == (2, 8)
    assert lightning["weights.ckpt"]["hyper_parameters"] == {"hidden": 5, "lr": 0.1}
    assert {"optimizer_states", "callbacks"}.isdisjoint(ember_["weights.ckpt"])
    assert e_seen[0] == l_seen[0] == sorted(USER_KEYS)  # on_save_checkpoint sees the filled checkpoint


def test_pinned_checkpoint_format_differences(tmp_path: Path) -> None:
    """Ember's checkpoints are data (migration guide item 1): no ``pytorch-lightning_version`` or
    ``hparams_name`` (Ember always rebuilds from keyword arguments); ``ember_checkpoint_version`` and
    ``versions`` instead; ``loops`` holds only ``"fit"`` and a ``weights_only`` file has none; extra
    entries for an exact resume (``rng_states``, ``loggers``, ``precision``)."""
    lightning, _ = saved_checkpoints(LIGHTNING, tmp_path / "lightning")
    ember_, _ = saved_checkpoints(EMBER, tmp_path / "ember")
    full_l, full_e = lightning["full.ckpt"], ember_["full.ckpt"]
    assert set(full_l) - set(full_e) == {"pytorch-lightning_version", "hparams_name"}
    assert set(full_e) - set(full_l) == {"ember_checkpoint_version", "versions", "rng_states", "loggers", "precision"}
    assert sorted(full_l["loops"]) == ["fit_loop", "predict_loop", "test_loop", "validate_loop"]
    assert list(full_e["loops"]) == ["fit"]
    assert "loops" in lightning["weights.ckpt"] and "loops" not in ember_["weights.ckpt"]


# ---------------------------------------------------------------------- load_from_checkpoint


def loaded(fw: Framework, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"hook": []}

    class Model(regression_module(fw)):
        def __init__(self, hidden: int = 3, lr: float = 0.1, extra: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters()
            if extra:
                self.more = nn.Linear(2, 2)

    class Renamed(Model):  # the layer was renamed since the checkpoint: its hook renames the weights
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.proj = self.layer
            del self.layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            out["hook"].append(sorted(checkpoint["state_dict"]))
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("layer.")]:
                state["proj." + key[len("layer."):]] = state.pop(key)

    torch.manual_seed(0)
    trainer, model = fw.trainer(root, max_epochs=1), Model(hidden=5)
    quiet_fit(trainer, model, data(32))
    path = str(root / "x.ckpt")
    trainer.save_checkpoint(path)

    def attempt(name: str, cls: type = Model, **kwargs: Any) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                m = cls.load_from_checkpoint(path, **kwargs)
            except Exception as err:
                out[name] = builtin_type(err)
                return
        weight = (m.proj if cls is Renamed else m.layer).weight
        out[name] = (dict(m.hparams), m.training, str(weight.device), torch.equal(weight, model.layer.weight),
                     hasattr(m, "more"), sum("more.weight" in str(w.message) for w in caught))  # fmt: skip

    attempt("plain")
    attempt("override", lr=0.5)
    attempt("unknown keyword ignored", bogus=1)
    attempt("new layer, strict", extra=True)
    attempt("new layer, strict=False", extra=True, strict=False)
    for i, where in enumerate(("cpu", torch.device("cpu"), {"cpu": "cpu"}, lambda storage, loc: storage)):
        attempt(f"map_location {i}", map_location=where)
    attempt("renamed by the hook", cls=Renamed)
    return out


def test_load_from_checkpoint(tmp_path: Path) -> None:
    lightning, ember_ = (loaded(fw, tmp_path / fw.name) for fw in BOTH)
    lightning["new layer, strict"] = "ValueError" if lightning["new layer, strict"] == "RuntimeError" else "?"
    assert ember_ == lightning  # Ember raises a CheckpointError (a ValueError) naming the file, Lightning a RuntimeError
    assert lightning["override"][0] == {"hidden": 5, "lr": 0.5, "extra": False}
    assert lightning["new layer, strict=False"][-2:] == (True, 1)  # built, with a warning naming the missing keys
    assert lightning["hook"] == [["layer.bias", "layer.weight"]]  # the hook ran before the weights were loaded
    assert lightning["renamed by the hook"][3] is True
