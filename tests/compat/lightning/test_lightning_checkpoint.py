"""``ModelCheckpoint`` details, Lightning against Ember: last-checkpoint name templates and the file
extension, version counters, ``save_on_exception``, ``last.ckpt`` without a scheduled save, no
monitor, NaN scores, ``~`` in ``dirpath``, refused configurations, and resuming into the same folder.

Each scenario runs the same code on both frameworks and compares the files written, their
``global_step`` and the callback's ``best_model_path``/``best_model_score``/``last_model_path``/
``kth_best_model_path``/``best_k_models``/``current_score``.
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning_kit import (
    BOTH,
    EMBER,
    LIGHTNING,
    Framework,
    checkpoint_view,
    data,
    on_both,
    quiet_fit,
    regression_module,
)

VALUES = (5.0, 3.0, 4.0, 1.0, 0.5)  # val_loss per epoch


def scripted_module(fw: Framework, values: tuple[float, ...], fail_at_step: int | None = None) -> Any:
    """Regression whose ``val_loss`` is ``values[epoch]``; raises in the training step ``fail_at_step``."""

    class Scripted(regression_module(fw)):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.global_step == fail_at_step:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", torch.tensor(values[self.current_epoch]))

    return Scripted()


def fit(
    fw: Framework, root: Path, values: tuple[float, ...] = VALUES, epochs: int = 3, validate: bool = True,
    fail_at_step: int | None = None, ckpt_path: Any = None, attributes: dict[str, Any] | None = None,
    trainer_args: dict[str, Any] | None = None, **checkpoint_args: Any,
) -> dict[str, Any]:  # fmt: skip
    """One fit with a ModelCheckpoint into ``root/c`` (32 samples, 4 steps an epoch); what it left."""
    cb = fw.ModelCheckpoint(dirpath=str(root / "c"), **checkpoint_args)
    for key, value in (attributes or {}).items():
        setattr(cb, key, value)
    trainer = fw.trainer(
        root, max_epochs=epochs, enable_checkpointing=True, callbacks=[cb], num_sanity_val_steps=0,
        **(trainer_args or {}),
    )  # fmt: skip
    error = None
    try:
        quiet_fit(trainer, scripted_module(fw, values, fail_at_step), data(32), data(16) if validate else None,
                  ckpt_path=ckpt_path)  # fmt: skip
    except RuntimeError as err:
        error = str(err)
    return {**checkpoint_view(cb, root / "c"), "error": error}


# ---------------------------------------------------------------------- names


def test_last_name_template_and_file_extension_on_an_instance(tmp_path):
    lightning, ember = on_both(
        tmp_path,
        lambda fw, root: fit(fw, root, save_last=True,
                             attributes={"CHECKPOINT_NAME_LAST": "{epoch}-last", "FILE_EXTENSION": ".pt"}),
    )  # fmt: skip
    assert ember == lightning
    assert ember["files"] == {"epoch=2-last.pt": 12, "epoch=2-step=12.pt": 12}  # older "{epoch}-last" files removed


def test_last_name_template_on_a_subclass(tmp_path):
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        class Named(fw.ModelCheckpoint):
            CHECKPOINT_NAME_LAST = "{epoch}-{step}-last"

        cb = Named(dirpath=str(root / "c"), save_last=True, monitor="val_loss", filename="best")
        quiet_fit(fw.trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=[cb], num_sanity_val_steps=0),
                  scripted_module(fw, VALUES), data(32), data(16))  # fmt: skip
        return checkpoint_view(cb, root / "c")

    lightning, ember = on_both(tmp_path, scenario)
    assert ember == lightning
    assert ember["files"] == {"best.ckpt": 8, "epoch=1-step=8-last.ckpt": 8}


def test_a_second_run_into_the_same_folder_versions_its_files(tmp_path):
    def scenario(fw: Framework, root: Path) -> tuple[dict, dict]:
        first = fit(fw, root, save_last=True)
        return first, fit(fw, root, save_last=True)

    lightning, ember = on_both(tmp_path, scenario)
    assert ember == lightning
    assert ember[1]["last"] == "last-v1.ckpt"
    assert ember[1]["files"] == {"epoch=2-step=12.ckpt": 12, "epoch=2-step=12-v1.ckpt": 12, "last.ckpt": 12, "last-v1.ckpt": 12}


def test_without_the_version_counter_a_second_run_overwrites(tmp_path):
    def scenario(fw: Framework, root: Path) -> tuple[dict, dict]:
        first = fit(fw, root, save_last=True, enable_version_counter=False)
        return first, fit(fw, root, epochs=2, save_last=True, enable_version_counter=False)

    lightning, ember = on_both(tmp_path, scenario)
    assert ember == lightning
    assert ember[1]["files"] == {"epoch=1-step=8.ckpt": 8, "epoch=2-step=12.ckpt": 12, "last.ckpt": 8}


# ---------------------------------------------------------------------- when files are written


@pytest.mark.parametrize(
    "case",
    [
        dict(save_on_exception=True, save_last=True, fail_at_step=10),
        dict(save_on_exception=True, monitor="val_loss", fail_at_step=9),
        dict(save_on_exception=True, every_n_train_steps=2, fail_at_step=6),  # saved at this step already
        dict(save_on_exception=True, fail_at_step=0),  # nothing trained yet
        dict(save_on_exception=False, fail_at_step=10),
    ],
    ids=["with-last", "with-monitor", "just-saved", "step-0", "off"],
)
def test_save_on_exception(tmp_path, case):
    lightning, ember = on_both(tmp_path, lambda fw, root: fit(fw, root, **case))
    assert ember == lightning
    assert ember["error"] == "boom"


def test_save_on_exception_names_the_file_by_the_template(tmp_path):
    lightning, ember = on_both(tmp_path, lambda fw, root: fit(fw, root, save_on_exception=True, fail_at_step=10))
    assert ember == lightning
    assert ember["files"] == {"epoch=1-step=8.ckpt": 8, "epoch=2-step=10.ckpt": 10}
    assert ember["best"] == "epoch=1-step=8.ckpt"  # not a top-k file


@pytest.mark.parametrize("validate", [True, False], ids=["validation", "no-validation"])
def test_last_checkpoint_with_every_n_epochs_0(tmp_path, validate):
    lightning, ember = on_both(
        tmp_path, lambda fw, root: fit(fw, root, validate=validate, every_n_epochs=0, save_last=True)
    )
    assert ember == lightning
    assert ember["files"] == {"last.ckpt": 12}  # written at the end of training


@pytest.mark.parametrize("top_k", [0, 1])
def test_last_checkpoint_without_validation(tmp_path, top_k):
    lightning, ember = on_both(
        tmp_path, lambda fw, root: fit(fw, root, validate=False, save_last=True, save_top_k=top_k)
    )
    assert ember == lightning
    assert ember["files"]["last.ckpt"] == 12


def test_without_a_monitor_there_is_no_best_score(tmp_path):
    lightning, ember = on_both(tmp_path, lambda fw, root: fit(fw, root, save_top_k=-1))
    assert ember == lightning
    assert ember["best_score"] is None and ember["kth"] == "" and ember["best_k"] == {} and ember["current"] is None
    assert ember["best"] == "epoch=2-step=12.ckpt"


@pytest.mark.parametrize(
    "case",
    [
        dict(values=(math.nan,), epochs=1, monitor="val_loss", filename="{epoch}-{val_loss:.2f}"),
        dict(values=(math.nan, 3.0, math.nan, 1.0), epochs=4, monitor="val_loss", save_top_k=2),
        dict(values=(math.nan, 2.0, math.nan), epochs=3, monitor="val_loss", mode="max", save_top_k=2),
    ],
    ids=["first-only", "min-top2", "max-top2"],
)
def test_a_nan_score(tmp_path, case):
    lightning, ember = on_both(tmp_path, lambda fw, root: fit(fw, root, **case))
    assert ember == lightning
    if case["epochs"] == 1:  # as Lightning: a NaN is kept as the worst score, not skipped
        assert ember["files"] == {"epoch=0-val_loss=nan.ckpt": 4} and ember["best_score"] == math.inf


def test_tilde_in_dirpath_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    dirs = [fw.ModelCheckpoint(dirpath="~/runs/../ckpts").dirpath for fw in BOTH]
    assert dirs[1] == dirs[0] == os.path.realpath(tmp_path / "ckpts")


# ---------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "arguments",
    [
        dict(mode="bogus"),
        dict(mode="bogus", monitor="val_loss"),
        dict(every_n_epochs=2, every_n_train_steps=3),
        dict(every_n_epochs=1, train_time_interval=datetime.timedelta(seconds=5)),
        dict(every_n_train_steps=1, train_time_interval=datetime.timedelta(seconds=5)),
        dict(every_n_epochs=-1),
        dict(save_top_k=-2, monitor="val_loss"),
        dict(save_top_k=3),
    ],
)
def test_bad_configurations_are_refused_naming_the_values(arguments):
    with pytest.raises(Exception):  # noqa: B017 (Lightning: MisconfigurationException)
        LIGHTNING.ModelCheckpoint(**arguments)
    with pytest.raises(ValueError) as err:
        EMBER.ModelCheckpoint(**arguments)
    for key, value in arguments.items():
        if key != "monitor":
            assert repr(value) in str(err.value) or str(value) in str(err.value)


@pytest.mark.parametrize(
    "arguments",
    [dict(every_n_epochs=0, every_n_train_steps=3), dict(every_n_train_steps=0, every_n_epochs=2)],
)
def test_a_trigger_set_to_0_is_off_and_combines(arguments):
    for fw in BOTH:
        fw.ModelCheckpoint(**arguments)


# ---------------------------------------------------------------------- resuming


@pytest.mark.parametrize("resume_from", ["epoch=1-step=8.ckpt", "last.ckpt"])
def test_resuming_into_the_same_folder_never_deletes_the_resumed_file(tmp_path, resume_from):
    def scenario(fw: Framework, root: Path) -> tuple[dict, dict]:
        first = fit(fw, root, epochs=2, monitor="val_loss", save_last=True)
        resumed = fit(fw, root, epochs=5, monitor="val_loss", save_last=True, ckpt_path=str(root / "c" / resume_from))
        return first, resumed

    lightning, ember = on_both(tmp_path, scenario)
    assert ember == lightning
    kept = {"epoch=4-step=20.ckpt": 20, "last.ckpt": 20}
    if resume_from != "last.ckpt":  # the resumed-from top-1 file fell out of the top k but stays
        kept["epoch=1-step=8.ckpt"] = 8
    assert ember[1]["files"] == kept


# ---------------------------------------------------------------------- deliberate differences


def test_pinned_last_checkpoint_is_written_at_every_scheduled_save(tmp_path):
    """Lightning 2.6 rewrites ``last.ckpt`` only when a top-k file is saved at the same step, so with
    ``save_top_k=1`` it is a copy of the best; Ember keeps it the latest, the one to resume from."""
    lightning, ember = on_both(tmp_path, lambda fw, root: fit(fw, root, values=(5.0, 3.0, 4.0), monitor="val_loss", save_last=True))
    assert lightning["files"] == {"epoch=1-step=8.ckpt": 8, "last.ckpt": 8}
    assert ember["files"] == {"epoch=1-step=8.ckpt": 8, "last.ckpt": 12}
    assert {k: v for k, v in ember.items() if k != "files"} == {k: v for k, v in lightning.items() if k != "files"}


def test_pinned_fast_dev_run_writes_no_last_checkpoint(tmp_path):
    """Lightning 2.6 writes ``last.ckpt`` at the end of a ``fast_dev_run`` (its ``on_train_end``
    ignores it); Ember writes no checkpoint then, as Lightning documents for ``fast_dev_run``."""
    lightning, ember = on_both(tmp_path, lambda fw, root: fit(fw, root, epochs=1, save_last=True,
                                                              trainer_args={"fast_dev_run": True}))  # fmt: skip
    assert list(lightning["files"]) == ["last.ckpt"]
    assert ember["files"] == {}


def test_pinned_a_ckpt_suffix_in_filename_is_not_doubled():
    """Lightning appends the extension to ``filename="{epoch}.ckpt"`` again (``epoch=2.ckpt.ckpt``)."""
    names = [os.path.basename(fw.ModelCheckpoint(filename="{epoch}.ckpt").format_checkpoint_name({"epoch": 2})) for fw in BOTH]
    assert names == ["epoch=2.ckpt.ckpt", "epoch=2.ckpt"]
