"""The checkpoint format: plain data that loads with ``weights_only=True``, RNG states that
round-trip, refusal of anything that is not an Ember checkpoint (naming the file, running nothing),
and versioned migration."""

from __future__ import annotations

import io
import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from resume_kit import ResumeNet, make_loader, quiet, seed_all

import ember.checkpoint.format as fmt
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    capture_rng_states,
    load_checkpoint,
    new_checkpoint,
    restore_rng_states,
    save_checkpoint,
)

# ---------------------------------------------------------------------------- plain data


def test_a_full_trainer_checkpoint_loads_with_plain_torch_load(tmp_path: Path) -> None:
    seed_all()
    model = ResumeNet(dropout=0.1, scheduler="step")
    trainer = quiet(
        tmp_path,
        max_epochs=2,
        precision="16-mixed",
        accumulate_grad_batches=3,
        logger=True,
        callbacks=[ModelCheckpoint(monitor="val_loss", save_last=True), EarlyStopping(monitor="val_loss")],
    )
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    path = tmp_path / "full.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # no Ember code involved
    assert ckpt[fmt.VERSION_KEY] == FORMAT_VERSION
    assert ckpt["versions"]["torch"] == torch.__version__
    assert ckpt["global_step"] == trainer.global_step == 8  # 2 epochs x ceil(10 / 3) steps
    assert ckpt["epoch"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v)
    assert ckpt["hyper_parameters"] == {"dropout": 0.1, "scheduler": "step", "lr": 0.02, "log_val": True}
    assert 0 < ckpt["optimizer_states"][0]["state"][0]["step"] <= 8  # the scaler may skip a step
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 8
    assert ckpt["precision"]["scaler"]["scale"] > 0
    assert {"python", "numpy", "torch"} <= set(ckpt["rng_states"])
    assert any(k.startswith("ModelCheckpoint") for k in ckpt["callbacks"])
    assert any(k.startswith("EarlyStopping") for k in ckpt["callbacks"])
    assert ckpt["loops"]["fit"]["engine"]["iteration"] == 20
    # the files ModelCheckpoint wrote are just as plain
    for f in (tmp_path / "ember_logs").rglob("*.ckpt"):
        assert torch.load(f, weights_only=True)["global_step"] > 0


def test_rng_states_round_trip_through_a_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    save_checkpoint({**new_checkpoint(), "rng_states": capture_rng_states()}, tmp_path / "rng.ckpt")
    expected = (random.random(), np.random.standard_normal(3), np.random.rand(2), torch.rand(4))
    random.seed(100)
    np.random.seed(100)
    torch.manual_seed(100)
    restore_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng_states"])
    got = (random.random(), np.random.standard_normal(3), np.random.rand(2), torch.rand(4))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    assert torch.equal(got[3], expected[3])


# ---------------------------------------------------------------------------- refusals


class _Touch:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Open:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [_Touch, _Open])
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path, payload: type, writer: str) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    obj = {fmt.VERSION_KEY: FORMAT_VERSION, "state_dict": {}, "x": payload(target)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not target.exists()
    with pytest.raises(CheckpointError):
        ResumeNet.load_from_checkpoint(path)
    with pytest.raises(CheckpointError):
        quiet(tmp_path, enable_checkpointing=False).fit(ResumeNet(), make_loader(), ckpt_path=path)
    assert not target.exists()


def _valid_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({**new_checkpoint(), "state_dict": {"w": torch.arange(1000.0)}}, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("random.ckpt", bytes(random.Random(0).randrange(256) for _ in range(4096)), "not"),
        ("empty.ckpt", b"", "empty"),
        ("text.ckpt", b"hello, I am not a checkpoint\n", "not"),
        ("truncated.ckpt", None, "truncated"),
    ],
)
def test_unreadable_files_are_refused_with_the_file_named(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is None:
        data = _valid_bytes()
        for cut in (len(data) // 2, len(data) - 30, 100):
            path.write_bytes(data[:cut])
            with pytest.raises(CheckpointError, match=message) as err:
                load_checkpoint(path)
            assert str(path) in str(err.value)
        return
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_a_torch_file_that_is_not_an_ember_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=fmt.VERSION_KEY) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not an Ember checkpoint"):
        load_checkpoint(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, FORMAT_VERSION + 10])
def test_a_future_format_version_is_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / "future.ckpt"
    torch.save({**new_checkpoint(), fmt.VERSION_KEY: version}, path)
    with pytest.raises(CheckpointError, match=f"format {version}") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "upgrade" in str(err.value)


@pytest.mark.parametrize("version", ["1", -1, True, 1.0, None])
def test_an_invalid_version_is_refused(tmp_path: Path, version: object) -> None:
    path = tmp_path / "odd.ckpt"
    torch.save({**new_checkpoint(), fmt.VERSION_KEY: version}, path)
    with pytest.raises(CheckpointError, match="invalid format version") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_save_checkpoint_refuses_a_dict_not_built_by_new_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="new_checkpoint"):
        save_checkpoint({"state_dict": {}}, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


# ---------------------------------------------------------------------------- migration


def test_older_formats_are_migrated_step_by_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.ckpt"
    save_checkpoint({**new_checkpoint(), "weights": {"w": torch.ones(2)}, "epoch": 4}, path)
    calls: list[int] = []

    def v1_to_v2(ckpt: dict) -> dict:  # renamed a key
        calls.append(1)
        ckpt["state_dict"] = ckpt.pop("weights")
        return ckpt

    def v2_to_v3(ckpt: dict) -> dict:  # added a key with a default
        calls.append(2)
        assert ckpt[fmt.VERSION_KEY] == 2 and "state_dict" in ckpt
        ckpt["loops"] = {"fit": {"epoch_done": ckpt["epoch"]}}
        return ckpt

    monkeypatch.setattr(fmt, "FORMAT_VERSION", 3)
    monkeypatch.setitem(fmt.MIGRATIONS, 1, v1_to_v2)
    monkeypatch.setitem(fmt.MIGRATIONS, 2, v2_to_v3)
    ckpt = load_checkpoint(path)
    assert calls == [1, 2]
    assert ckpt[fmt.VERSION_KEY] == 3
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2)) and "weights" not in ckpt
    assert ckpt["loops"] == {"fit": {"epoch_done": 4}}
    # the file itself is untouched
    assert torch.load(path, weights_only=True)[fmt.VERSION_KEY] == 1


def test_a_gap_in_the_migration_chain_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.ckpt"
    save_checkpoint(new_checkpoint(), path)
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 3)
    monkeypatch.setitem(fmt.MIGRATIONS, 1, lambda c: c)
    with pytest.raises(CheckpointError, match="format 2") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_a_checkpoint_zip_with_a_corrupted_member_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    good.write_bytes(_valid_bytes())
    bad = tmp_path / "bad.ckpt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data[: len(data) // 2]
            zout.writestr(item, data)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)


# ---------------------------------------------------------------------------- only plain data is written


def test_numpy_hyperparameters_are_saved_as_plain_numbers(tmp_path: Path) -> None:
    """NumPy scalars count as numbers for save_hyperparameters; written as they are, they would
    make the checkpoint unloadable with weights_only=True."""
    model = ResumeNet(lr=np.float64(0.01), dropout=np.float32(0.5))
    trainer = quiet(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    trainer.save_checkpoint(tmp_path / "np.ckpt")
    hparams = torch.load(tmp_path / "np.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["lr"] == 0.01 and type(hparams["lr"]) is float and type(hparams["dropout"]) is float
    loaded = ResumeNet.load_from_checkpoint(tmp_path / "np.ckpt")
    assert loaded.hparams.lr == 0.01
    save_checkpoint({**new_checkpoint(), "n": np.int64(3), "flags": [np.bool_(True)]}, tmp_path / "n.ckpt")
    assert load_checkpoint(tmp_path / "n.ckpt")["n"] == 3 and load_checkpoint(tmp_path / "n.ckpt")["flags"] == [True]


def test_a_callback_state_that_would_not_load_is_refused_when_saving(tmp_path: Path) -> None:
    from collections import defaultdict

    from ember.callbacks.callback import Callback

    class Stateful(Callback):
        state: dict = {}

        @property
        def state_key(self) -> str:
            return "Stateful"

        def state_dict(self) -> dict:
            return self.state

    cb = Stateful()
    trainer = quiet(tmp_path, max_epochs=1, enable_checkpointing=False, callbacks=[cb])
    trainer.fit(ResumeNet(), make_loader(), make_loader(shuffle=False))
    cb.state = {"counts": defaultdict(int, a=2), "pair": torch.Size([2, 3])}  # converted / kept
    trainer.save_checkpoint(tmp_path / "ok.ckpt")
    assert torch.load(tmp_path / "ok.ckpt", weights_only=True)["callbacks"]["Stateful"] == {
        "counts": {"a": 2},
        "pair": torch.Size([2, 3]),
    }
    cb.state = {"history": np.zeros(3)}
    with pytest.raises(TypeError, match=r"\['callbacks'\]\['Stateful'\]\['history'\] is a numpy.ndarray"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    cb.state = {"where": Path("/data")}
    with pytest.raises(TypeError, match="PosixPath"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_state_dict_metadata_survives(tmp_path: Path) -> None:
    bn = torch.nn.BatchNorm1d(3)
    sd = bn.state_dict()
    save_checkpoint({**new_checkpoint(), "state_dict": sd}, tmp_path / "bn.ckpt")
    loaded = load_checkpoint(tmp_path / "bn.ckpt")["state_dict"]
    assert loaded._metadata == sd._metadata
