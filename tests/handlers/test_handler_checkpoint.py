"""``ember.handlers.ModelCheckpoint`` / ``Checkpoint`` / ``DiskSaver``, used as Ignite 0.5 users use them:
file names as Ignite writes them, ``n_saved`` pruning, ``require_empty``, ``load_objects``, save handlers,
and the safety rules (a loaded state never makes a removal leave the directory). The side-by-side runs
against the real Ignite are in ``tests/compat/ignite/test_handlers_checkpoint.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ember.engine import Engine, Events
from ember.handlers import BaseSaveHandler, Checkpoint, DiskSaver, ModelCheckpoint, global_step_from_engine


def idle_engine() -> Engine:
    return Engine(lambda engine, batch: None)


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_ignite_docs_example_file_names(tmp_path: Path) -> None:
    """Ignite's docstring: files are named by the iteration, also on EPOCH_COMPLETED."""
    handler = ModelCheckpoint(tmp_path, "myprefix", n_saved=2, create_dir=True)
    engine = idle_engine()
    model = nn.Linear(3, 3)
    engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler, {"mymodel": model})
    engine.run([0, 1, 2, 3, 4], max_epochs=6)
    assert files(tmp_path) == ["myprefix_mymodel_20.pt", "myprefix_mymodel_30.pt"]
    assert handler.last_checkpoint == tmp_path / "myprefix_mymodel_30.pt"  # a Path, as in Ignite
    state = torch.load(tmp_path / "myprefix_mymodel_30.pt", weights_only=True)
    assert state.keys() == model.state_dict().keys()  # one object: its own state dict
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_several_objects_and_load_objects(tmp_path: Path) -> None:
    handler = ModelCheckpoint(tmp_path, "myprefix", n_saved=None, create_dir=True)
    model = nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        opt.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler, {"weights": model, "optimizer": opt})
    engine.run(torch.randn(10, 1, 3), max_epochs=4)  # the last save is the final state
    assert files(tmp_path) == ["myprefix_checkpoint_20.pt", "myprefix_checkpoint_40.pt"]
    saved = torch.load(tmp_path / "myprefix_checkpoint_40.pt", weights_only=True)
    assert set(saved) == {"weights", "optimizer"}
    # load into fresh objects, from the path and from the dict
    for source in (tmp_path / "myprefix_checkpoint_40.pt", str(tmp_path / "myprefix_checkpoint_40.pt"), saved):
        model2 = nn.Linear(3, 3)
        opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
        Checkpoint.load_objects({"weights": model2, "optimizer": opt2}, source)
        assert all(torch.equal(model2.state_dict()[k], v) for k, v in model.state_dict().items())
        assert torch.equal(
            opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"]
        )
    # one object out of a several-object checkpoint
    model3 = nn.Linear(3, 3)
    Checkpoint.load_objects({"weights": model3}, saved)
    assert torch.equal(model3.weight, model.weight)
    with pytest.raises(ValueError, match="missing"):
        Checkpoint.load_objects({"weights": model3, "missing": opt}, saved)


def test_load_objects_single_object_from_its_own_file(tmp_path: Path) -> None:
    handler = ModelCheckpoint(tmp_path, "p", create_dir=True)
    model = nn.Linear(2, 2)
    engine = idle_engine()
    engine.add_event_handler(Events.COMPLETED, handler, {"model": model})
    engine.run([0, 1, 2], max_epochs=1)
    assert files(tmp_path) == ["p_model_3.pt"]
    other = nn.Linear(2, 2)
    Checkpoint.load_objects({"model": other}, tmp_path / "p_model_3.pt")
    assert torch.equal(other.weight, model.weight)
    bad = nn.Linear(2, 3)
    with pytest.raises(RuntimeError):
        Checkpoint.load_objects({"model": bad}, tmp_path / "p_model_3.pt")
    Checkpoint.load_objects({"model": nn.Linear(2, 2, bias=False)}, tmp_path / "p_model_3.pt", strict=False)


def test_called_directly(tmp_path: Path) -> None:
    handler = ModelCheckpoint(tmp_path, "direct", n_saved=2)
    model = nn.Linear(2, 2)
    engine = idle_engine()
    for it in (5, 7, 9):
        engine.state.iteration = it
        handler(engine, {"model": model})
    assert files(tmp_path) == ["direct_model_7.pt", "direct_model_9.pt"]
    assert handler.saved == [(7, "direct_model_7.pt"), (9, "direct_model_9.pt")]  # Ignite's _saved
    assert handler.state_dict() == {"_saved": [(7, "direct_model_7.pt"), (9, "direct_model_9.pt")]}


def test_without_prefix(tmp_path: Path) -> None:
    handler = ModelCheckpoint(tmp_path)
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler, {"net": nn.Linear(1, 1)})
    engine.run([0, 1], max_epochs=3)
    assert files(tmp_path) == ["net_6.pt"]


def test_score_function_names_and_keeps_the_best(tmp_path: Path) -> None:
    scores = iter([0.5, 0.9, 0.7, 0.95, 0.1])
    handler = ModelCheckpoint(
        tmp_path, "best", score_function=lambda e: next(scores), score_name="val_acc", n_saved=2,
    )  # fmt: skip
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": nn.Linear(1, 1)})
    engine.run([0, 1], max_epochs=5)
    assert files(tmp_path) == ["best_model_val_acc=0.9000.pt", "best_model_val_acc=0.9500.pt"]
    assert handler.last_checkpoint == tmp_path / "best_model_val_acc=0.9500.pt"


def test_score_with_global_step_transform_and_integer_scores(tmp_path: Path) -> None:
    scores = iter([3, 1, 2])
    handler = ModelCheckpoint(
        tmp_path, "x", score_function=lambda e: next(scores), n_saved=1,
        global_step_transform=lambda engine, event: engine.state.epoch,
    )  # fmt: skip
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": nn.Linear(1, 1)})
    engine.run([0, 1], max_epochs=3)
    assert files(tmp_path) == ["x_model_1_3.pt"]  # {prefix}_{name}_{global_step}_{score}


def test_global_step_transform_names_by_another_engine(tmp_path: Path) -> None:
    trainer = idle_engine()
    trainer.state.epoch = 7
    handler = ModelCheckpoint(
        tmp_path, "e", score_function=lambda e: 0.25, score_name="acc",
        global_step_transform=lambda engine, event: trainer.state.epoch,
    )  # fmt: skip
    evaluator = idle_engine()
    evaluator.add_event_handler(Events.COMPLETED, handler, {"model": nn.Linear(1, 1)})
    evaluator.run([0], max_epochs=1)
    assert files(tmp_path) == ["e_model_7_acc=0.2500.pt"]


def test_require_empty_and_create_dir(tmp_path: Path) -> None:
    (tmp_path / "old_model_1.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="require_empty") as err:
        ModelCheckpoint(tmp_path, "new")
    assert str(tmp_path) in str(err.value)
    ModelCheckpoint(tmp_path, "new", require_empty=False)  # fine
    with pytest.raises(ValueError, match="create_dir"):
        ModelCheckpoint(tmp_path / "missing", create_dir=False)
    ModelCheckpoint(tmp_path / "made" / "deep")
    assert (tmp_path / "made" / "deep").is_dir()
    ModelCheckpoint(tmp_path / "x", atomic=False)  # accepted; Ember writes atomically anyway


def test_positional_arguments_follow_ignite(tmp_path: Path) -> None:
    # dirname, filename_prefix, score_function, score_name, n_saved, atomic, require_empty, create_dir, transform
    handler = ModelCheckpoint(tmp_path, "pre", None, None, 3, True, False, True, lambda e, ev: 42)
    engine = idle_engine()
    handler(engine, {"m": nn.Linear(1, 1)})
    assert files(tmp_path) == ["pre_m_42.pt"]


def test_bad_to_save(tmp_path: Path) -> None:
    handler = ModelCheckpoint(tmp_path)
    with pytest.raises(TypeError, match="state_dict"):
        handler(idle_engine(), {"x": 3})
    with pytest.raises(RuntimeError, match="no objects to checkpoint"):
        handler(idle_engine(), {})
    with pytest.raises(TypeError, match=r"to_save\['nested.0'\] must have a state_dict"):
        Checkpoint({"nested": [3]}, tmp_path / "n")
    with pytest.raises(ValueError, match="n_saved must be a positive integer or None"):
        Checkpoint({"m": nn.Linear(1, 1)}, tmp_path / "n", n_saved=0)
    with pytest.raises(TypeError, match="save_handler must be"):
        Checkpoint({"m": nn.Linear(1, 1)}, 3)


def test_checkpoint_state_round_trip(tmp_path: Path) -> None:
    model = nn.Linear(1, 1)
    a = Checkpoint({"model": model}, tmp_path, n_saved=2)  # a directory: DiskSaver(require_empty=True)
    engine = idle_engine()
    for it in (1, 2):
        engine.state.iteration = it
        a(engine)
    b = Checkpoint({"model": model}, DiskSaver(tmp_path, require_empty=False), n_saved=2)
    b.load_state_dict(a.state_dict())
    engine.state.iteration = 3
    b(engine)
    assert files(tmp_path) == ["model_2.pt", "model_3.pt"]  # b pruned a's oldest file


def test_last_checkpoint_is_the_best_as_in_ignite(tmp_path: Path) -> None:
    scores = iter([0.9, 0.95, 0.92])
    handler = ModelCheckpoint(tmp_path, "b", score_function=lambda e: next(scores), score_name="acc", n_saved=2)
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": nn.Linear(1, 1)})
    engine.run([0], max_epochs=3)
    assert files(tmp_path) == ["b_model_acc=0.9200.pt", "b_model_acc=0.9500.pt"]
    assert handler.last_checkpoint == tmp_path / "b_model_acc=0.9500.pt"


def test_a_crafted_include_self_state_cannot_delete_outside_files(tmp_path: Path) -> None:
    """``include_self`` stores the kept-file list in each checkpoint; a checkpoint edited to name other
    files (elsewhere, through ``..``, through a symlink) loads with warnings and deletes nothing of them."""
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"precious")
    directory = tmp_path / "ckpts"
    model = nn.Linear(1, 1)
    first = Checkpoint({"model": model}, DiskSaver(directory), n_saved=1, include_self=True)
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, first)
    engine.run([0], max_epochs=1)
    saved = torch.load(directory / "model_1.pt", weights_only=True)
    assert saved["checkpointer"] == {"_saved": [(1, "model_1.pt")]}  # inside the one object's state, as Ignite
    os.symlink(victim, directory / "alias.pt")
    saved["checkpointer"] = {"_saved": [(0, "../victim.pt"), (0, str(victim)), (0, "alias.pt"), (1, "model_1.pt")]}
    resumed = Checkpoint({"model": model}, DiskSaver(directory, require_empty=False), n_saved=1)
    with pytest.warns(UserWarning) as caught:
        resumed.load_state_dict(saved["checkpointer"])
    assert sum("victim.pt" in str(w.message) or "alias.pt" in str(w.message) for w in caught) == 3
    assert resumed.state_dict() == {"_saved": [(1, "model_1.pt")]}
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, resumed)
    engine.run([0, 1], max_epochs=2)
    assert victim.read_bytes() == b"precious" and (directory / "alias.pt").is_symlink()
    assert files(directory) == ["alias.pt", "model_4.pt"]


def test_a_save_handler_gets_saves_and_removals_and_a_failed_write_books_nothing(tmp_path: Path) -> None:
    calls = []

    class Store(BaseSaveHandler):
        fail = False

        def __call__(self, checkpoint, filename, metadata=None):
            if self.fail:
                raise OSError("disk full")
            calls.append(("save", filename, metadata["basename"], metadata["priority"]))

        def remove(self, filename):
            calls.append(("remove", filename))

    store = Store()
    handler = Checkpoint({"net": nn.Linear(1, 1)}, store, filename_prefix="run", n_saved=1)
    engine = idle_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    engine.run([0], max_epochs=2)
    assert calls == [("save", "run_net_1.pt", "run_net", 1), ("save", "run_net_2.pt", "run_net", 2),
                     ("remove", "run_net_1.pt")]  # fmt: skip
    assert handler.last_checkpoint == "run_net_2.pt"
    store.fail = True
    engine.state.iteration = 3
    with pytest.raises(OSError, match="disk full"):
        handler(engine)
    assert handler.state_dict() == {"_saved": [(2, "run_net_2.pt")]} and calls[-1] == ("remove", "run_net_1.pt")


def test_disk_saver_passes_kwargs_to_torch_save_and_names_files_by_another_engine(tmp_path: Path) -> None:
    trainer = idle_engine()
    trainer.run([0, 1, 2], max_epochs=4)
    evaluator = idle_engine()
    evaluator.state.metrics["acc"] = 0.5
    handler = ModelCheckpoint(
        tmp_path, "best", score_name="acc", global_step_transform=global_step_from_engine(trainer),
        _use_new_zipfile_serialization=False,
    )  # fmt: skip
    evaluator.add_event_handler(Events.COMPLETED, handler, {"model": nn.Linear(2, 2)})
    evaluator.run([0], max_epochs=1)
    assert files(tmp_path) == ["best_model_4_acc=0.5000.pt"]  # the trainer's epoch; the score from state.metrics
    with open(tmp_path / "best_model_4_acc=0.5000.pt", "rb") as f:
        assert f.read(2) != b"PK"  # the legacy (non-zip) format asked for
    with pytest.raises(ValueError, match="not a plain file name"):
        handler.save_handler(nn.Linear(1, 1).state_dict(), "../outside.pt")


def test_reload_objects_names_the_file_from_its_components(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    handler = Checkpoint({"model": model}, DiskSaver(tmp_path), n_saved=None, global_step_transform=lambda e, ev: 3)
    handler(idle_engine())
    fresh = nn.Linear(2, 2)
    handler.reload_objects({"model": fresh}, global_step=3)
    assert torch.equal(fresh.weight, model.weight)
    with pytest.raises(FileNotFoundError):
        handler.reload_objects({"model": fresh}, global_step=4)
    with pytest.raises(AttributeError, match="needs a DiskSaver"):
        Checkpoint({"model": model}, lambda c, f: None).reload_objects({"model": fresh}, global_step=3)
