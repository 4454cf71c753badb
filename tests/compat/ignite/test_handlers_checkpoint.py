"""Differential tests: ``Checkpoint`` / ``ModelCheckpoint`` / ``DiskSaver`` on the real Ignite 0.5.5 and on
Ember, the same scenario on both, comparing the files written, what they hold, the save-handler calls,
``last_checkpoint``, ``state_dict()`` and the ``SAVED_CHECKPOINT`` events.

Deliberate differences are pinned at the end (and listed in the migration guide): Ember writes the new
file before removing the one it displaces, overwrites a re-used file name instead of removing it first,
never keeps a NaN score, and refuses a loaded state that names a file outside the directory.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

ignite_engine = pytest.importorskip("ignite.engine")
ignite_handlers = pytest.importorskip("ignite.handlers")
from ignite.handlers.checkpoint import BaseSaveHandler as IgniteBaseSaveHandler  # noqa: E402
from ignite.handlers.checkpoint import CheckpointEvents as IgniteCheckpointEvents  # noqa: E402

import ember.engine as ember_engine  # noqa: E402
import ember.handlers as ember_handlers  # noqa: E402

LIBS = {
    "ignite": (ignite_engine, ignite_handlers, IgniteBaseSaveHandler),
    "ember": (ember_engine, ember_handlers, ember_handlers.BaseSaveHandler),
}
CHECKPOINT_EVENTS = {"ignite": IgniteCheckpointEvents, "ember": ember_handlers.CheckpointEvents}


def objects(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {"model": model, "optimizer": optimizer}


def trained_step(objs: dict[str, Any]):
    model, optimizer = objs["model"], objs["optimizer"]

    def step(engine: Any, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run_checkpoint(lib: str, directory: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """One scenario on one library: a trainer whose epochs end with a checkpoint (a score per epoch
    from ``cfg["scores"]``); returns what can be observed."""
    engine_mod, handlers_mod, _ = LIBS[lib]
    objs = objects()
    to_save = {"model": objs["model"]} if cfg["single"] else dict(objs)
    trainer = engine_mod.Engine(trained_step(objs))
    if cfg["with_trainer"]:
        to_save["trainer"] = trainer
    scores = cfg["scores"]
    kwargs: dict[str, Any] = {
        "filename_prefix": cfg["prefix"],
        "n_saved": cfg["n_saved"],
        "greater_or_equal": cfg["goe"],
        "include_self": cfg["include_self"],
    }
    if scores is not None:
        if cfg["score_name_only"]:
            kwargs["score_name"] = "acc"

            @trainer.on(engine_mod.Events.EPOCH_COMPLETED)
            def put_metric(engine: Any) -> None:
                engine.state.metrics["acc"] = scores[engine.state.epoch - 1]
        else:
            kwargs["score_function"] = lambda engine: scores[engine.state.epoch - 1]
            kwargs["score_name"] = cfg["score_name"]
    if cfg["step_transform"]:
        kwargs["global_step_transform"] = handlers_mod.global_step_from_engine(trainer)
    if cfg["pattern"]:
        kwargs["filename_pattern"] = cfg["pattern"]
    handler = handlers_mod.Checkpoint(to_save, handlers_mod.DiskSaver(directory), **kwargs)
    trainer.add_event_handler(cfg["event"](engine_mod.Events), handler)
    trainer.run(torch.randn(4, 1, 3, generator=torch.Generator().manual_seed(1)), max_epochs=len(scores or [0] * 6))
    last = handler.last_checkpoint
    contents = {}
    for name in sorted(os.listdir(directory)):
        data = torch.load(directory / name, weights_only=True)
        contents[name] = sorted(data) if isinstance(data, dict) else type(data).__name__
    return {
        "files": sorted(os.listdir(directory)),
        "last": None if last is None else Path(last).name,
        "last_is_path": isinstance(last, Path),
        "state": [(p, f) for p, f in handler.state_dict()["_saved"]],
        "contents": contents,
    }


def _scenarios() -> list[dict[str, Any]]:
    rng = random.Random(12)
    score_lists = [
        None,
        [0.5, 0.9, 0.7, 0.95, 0.1, 0.95],
        [3, 1, 2, 2, 5, 4],  # integer scores: shown without decimals
        [0.2, 0.2, 0.2, 0.3, 0.1, 0.3],  # ties: greater_or_equal decides
        [round(rng.random(), 1) for _ in range(6)],
    ]
    events = [
        lambda E: E.EPOCH_COMPLETED,
        lambda E: E.ITERATION_COMPLETED(every=3),
        lambda E: E.EPOCH_COMPLETED(every=2),
    ]
    grid = itertools.product(
        score_lists, [1, 2, None], ["", "pre"], [False, True], [False, True], [None, "{name}-{global_step}.{ext}"]
    )
    out = []
    for i, (scores, n_saved, prefix, goe, step_transform, pattern) in enumerate(rng.sample(list(grid), 80)):
        if pattern and not step_transform and scores is not None:
            pattern = "{name}_{score}.{ext}"
        out.append(
            {
                "scores": scores, "n_saved": n_saved, "prefix": prefix, "goe": goe, "step_transform": step_transform,
                "pattern": pattern, "event": events[i % len(events)] if scores is None else events[0],
                "single": i % 3 != 0, "with_trainer": i % 5 == 0, "include_self": i % 7 == 0,
                "score_name": "acc" if i % 2 else None, "score_name_only": scores is not None and i % 4 == 1,
            }
        )  # fmt: skip
    return out


SCENARIOS = _scenarios()


def test_checkpoint_grid_matches_ignite(tmp_path: Path) -> None:
    """Every combination of score (none, float, int, ties, random), n_saved, prefix, greater_or_equal,
    global_step_transform and filename_pattern: the same files, contents, last_checkpoint and state."""
    for i, cfg in enumerate(SCENARIOS):
        got = {lib: run_checkpoint(lib, tmp_path / f"{i}-{lib}", cfg) for lib in LIBS}
        assert got["ember"] == got["ignite"], (i, cfg)
    assert len(SCENARIOS) == 80  # sampled from the 240 combinations


def test_saved_checkpoint_event_fires_per_save(tmp_path: Path) -> None:
    counts = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        engine = engine_mod.Engine(lambda e, b: None)
        engine.register_events(*CHECKPOINT_EVENTS[lib])
        seen: list[int] = []
        engine.add_event_handler(handlers_mod.Checkpoint.SAVED_CHECKPOINT, seen.append, 1)
        scores = iter([0.1, 0.5, 0.2, 0.9])
        handler = handlers_mod.Checkpoint(
            {"m": nn.Linear(1, 1)}, handlers_mod.DiskSaver(tmp_path / lib), score_function=lambda e, s=scores: next(s)
        )
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=4)
        counts[lib] = len(seen)
    assert counts == {"ignite": 3, "ember": 3}


class Recorder:
    """A save handler shared by both libraries' runs (its base class is the library's)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else None
        self.calls.append(("save", filename, keys, dict(metadata) if metadata is not None else None))

    def remove(self, filename: str) -> None:
        self.calls.append(("remove", filename))


def recorder_for(lib: str) -> Any:
    base = LIBS[lib][2]
    return type(f"{lib}Recorder", (Recorder, base), {})()


@pytest.mark.parametrize("n_saved", [1, 2, 3])
@pytest.mark.parametrize("with_score", [False, True])
def test_save_handler_calls_match_ignite(n_saved: int, with_score: bool) -> None:
    """A BaseSaveHandler gets the same saves (file name, state keys, metadata) and the same removals;
    only the order of a save and the removal it causes differs (pinned below)."""
    rng = random.Random(n_saved)
    scores = [rng.choice([0.1, 0.4, 0.4, 0.8, 0.9]) for _ in range(8)]
    calls = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        saver = recorder_for(lib)
        kwargs = {"score_function": (lambda e: scores[e.state.epoch - 1]), "score_name": "s"} if with_score else {}
        handler = handlers_mod.Checkpoint(objects(), saver, filename_prefix="p", n_saved=n_saved, **kwargs)
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0, 1], max_epochs=8)
        calls[lib] = (saver.calls, handler.last_checkpoint)
    (ember_calls, ember_last), (ignite_calls, ignite_last) = calls["ember"], calls["ignite"]
    assert ember_last == ignite_last and isinstance(ember_last, str)  # not a DiskSaver: the file name
    assert [c for c in ember_calls if c[0] == "save"] == [c for c in ignite_calls if c[0] == "save"]
    # Ignite removes a re-used file name before saving it again; Ember overwrites it (pinned below)
    ignite_removes = [
        c
        for i, c in enumerate(ignite_calls)
        if c[0] == "remove" and ignite_calls[i + 1 : i + 2] != [("save", c[1], *ignite_calls[i + 1][2:])]
    ]
    assert sorted(c for c in ember_calls if c[0] == "remove") == sorted(ignite_removes)


def saving_function(calls: list, arity: int) -> Any:
    if arity == 2:
        return lambda checkpoint, filename: calls.append(filename)
    return lambda checkpoint, filename, metadata: calls.append((filename, metadata["basename"]))


@pytest.mark.parametrize("arity", [2, 3])
def test_plain_callable_save_handler(arity: int) -> None:
    """Any callable saves (with or without metadata) and is never asked to remove anything."""
    seen: dict[str, list] = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        calls: list = []
        save = saving_function(calls, arity)
        handler = handlers_mod.Checkpoint({"net": nn.Linear(1, 1)}, save, filename_prefix="x", n_saved=1)
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0, 1, 2], max_epochs=3)
        seen[lib] = [calls, handler.last_checkpoint, handler.save_handler is save]
    assert seen["ember"] == seen["ignite"]


def test_model_checkpoint_matches_ignite(tmp_path: Path) -> None:
    observed = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        objs = objects()
        d = tmp_path / lib
        handler = handlers_mod.ModelCheckpoint(
            d, "best", score_function=lambda e: -e.state.output, score_name="neg_loss", n_saved=2,
            global_step_transform=lambda e, ev: e.state.epoch, require_empty=False,
        )  # fmt: skip
        engine = engine_mod.Engine(trained_step(objs))
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler, objs)
        engine.run(torch.randn(3, 1, 3, generator=torch.Generator().manual_seed(3)), max_epochs=5)
        with pytest.raises(RuntimeError):
            handler(engine, {})
        observed[lib] = (sorted(os.listdir(d)), Path(handler.last_checkpoint).name, handler.state_dict())
        # the best model comes back with load_objects, from the other library's file too
    assert observed["ember"] == observed["ignite"]
    best = observed["ember"][1]
    for saver, loader in (("ignite", "ember"), ("ember", "ignite")):
        fresh = objects(seed=5)
        LIBS[loader][1].Checkpoint.load_objects(fresh, tmp_path / saver / best)
        reference = torch.load(tmp_path / saver / best, weights_only=True)
        assert all(torch.equal(fresh["model"].state_dict()[k], v) for k, v in reference["model"].items())
        assert fresh["optimizer"].state_dict()["state"].keys() == reference["optimizer"]["state"].keys()


def test_state_dict_round_trips_between_the_libraries(tmp_path: Path) -> None:
    """A Checkpoint resumed from the other library's state_dict keeps pruning the same files."""
    scores = [0.3, 0.9, 0.5, 0.95, 0.7, 0.99, 0.1]

    def run(lib: str, directory: Path, state: Any, epochs: range) -> Any:
        engine_mod, handlers_mod, _ = LIBS[lib]
        handler = handlers_mod.Checkpoint(
            {"model": nn.Linear(1, 1)}, handlers_mod.DiskSaver(directory, require_empty=False),
            score_function=lambda e: scores[e.state.epoch - 1], n_saved=2,
            global_step_transform=lambda e, ev: e.state.epoch,
        )  # fmt: skip
        if state is not None:
            handler.load_state_dict(state)
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=epochs.stop)
        return handler

    results = {}
    for first, second in itertools.product(LIBS, LIBS):
        d = tmp_path / f"{first}-{second}"
        state = run(first, d, None, range(4)).state_dict()
        assert state == {"_saved": [(0.9, "model_2_0.9000.pt"), (0.95, "model_4_0.9500.pt")]}
        # scores for epochs 1..7 again: the resumed handler sees the later epochs' scores
        handler = run(second, d, state, range(7))
        results[(first, second)] = (
            sorted(os.listdir(d)),
            dict(handler.state_dict()),
            Path(handler.last_checkpoint).name,
        )
    assert len(set(map(repr, results.values()))) == 1, results


def test_default_score_fn_reset_and_save_handler_attribute(tmp_path: Path) -> None:
    observed = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        saver = handlers_mod.DiskSaver(tmp_path / lib)
        loss_score = handlers_mod.Checkpoint.get_default_score_fn("loss", -1.0)
        handler = handlers_mod.Checkpoint({"m": nn.Linear(1, 1)}, saver, score_function=loss_score, score_name="neg")
        engine = engine_mod.Engine(lambda e, b: None)

        @engine.on(engine_mod.Events.EPOCH_COMPLETED)
        def put_loss(e: Any) -> None:
            e.state.metrics["loss"] = [0.5, 0.25, 0.75][e.state.epoch - 1]

        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=3)
        before = sorted(os.listdir(tmp_path / lib))
        handler.reset()
        after_reset = (handler.last_checkpoint, handler.state_dict())
        with pytest.raises(ValueError):
            handlers_mod.Checkpoint.get_default_score_fn("loss", 2.0)
        observed[lib] = (before, after_reset, handler.save_handler is saver)
    assert observed["ember"] == observed["ignite"]
    assert observed["ember"][0] == ["m_neg=-0.2500.pt"]


def test_directory_argument_and_require_empty(tmp_path: Path) -> None:
    for lib, (_, handlers_mod, _) in LIBS.items():
        d = tmp_path / lib
        handler = handlers_mod.Checkpoint({"m": nn.Linear(1, 1)}, d)  # a path: DiskSaver(create_dir=True)
        assert isinstance(handler.save_handler, handlers_mod.DiskSaver) and d.is_dir()
        (d / "old.pt").write_bytes(b"x")
        with pytest.raises(ValueError, match="require_empty"):
            handlers_mod.Checkpoint({"m": nn.Linear(1, 1)}, d)
        with pytest.raises(ValueError):
            handlers_mod.DiskSaver(tmp_path / lib / "missing", create_dir=False)
        with pytest.raises(ValueError):
            handlers_mod.Checkpoint({"m": nn.Linear(1, 1)}, handlers_mod.DiskSaver(d, require_empty=False), n_saved=0)
        with pytest.raises(TypeError):
            handlers_mod.Checkpoint({"m": 3}, handlers_mod.DiskSaver(d, require_empty=False))
        with pytest.raises(ValueError):
            handlers_mod.Checkpoint({"checkpointer": nn.Linear(1, 1)}, "unused", include_self=True)


# ---------------------------------------------------------------------- deliberate differences (pinned)


def test_difference_ember_writes_before_it_removes() -> None:
    """Ignite removes the displaced checkpoint, then saves; Ember saves, then removes (a crash in
    between leaves one file too many, never one too few)."""
    orders = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        saver = recorder_for(lib)
        handler = handlers_mod.Checkpoint({"m": nn.Linear(1, 1)}, saver, n_saved=1)
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=2)
        orders[lib] = [c[:2] for c in saver.calls]
    assert orders["ignite"] == [("save", "m_1.pt"), ("remove", "m_1.pt"), ("save", "m_2.pt")]
    assert orders["ember"] == [("save", "m_1.pt"), ("save", "m_2.pt"), ("remove", "m_1.pt")]


def test_difference_a_reused_file_name_is_overwritten_not_removed_first() -> None:
    orders = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        saver = recorder_for(lib)
        scores = iter([0.1, 0.2])
        handler = handlers_mod.Checkpoint(
            {"m": nn.Linear(1, 1)}, saver, n_saved=2, score_function=lambda e, s=scores: next(s),
            global_step_transform=lambda e, ev: 7,
        )  # fmt: skip
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=2)
        orders[lib] = [c[:2] for c in saver.calls]
    assert orders["ignite"] == [("save", "m_7_0.1000.pt"), ("save", "m_7_0.2000.pt")]  # different names here
    assert orders["ember"] == orders["ignite"]
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        saver = recorder_for(lib)
        handler = handlers_mod.Checkpoint(
            {"m": nn.Linear(1, 1)}, saver, n_saved=2, global_step_transform=lambda e, ev: 7
        )
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=2)
        orders[lib] = [c[:2] for c in saver.calls]
    assert orders["ignite"] == [("save", "m_7.pt"), ("remove", "m_7.pt"), ("save", "m_7.pt")]
    assert orders["ember"] == [("save", "m_7.pt"), ("save", "m_7.pt")]


def test_difference_a_nan_score_is_never_kept(tmp_path: Path) -> None:
    files = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        scores = iter([float("nan"), 0.5])
        handler = handlers_mod.Checkpoint(
            {"m": nn.Linear(1, 1)}, handlers_mod.DiskSaver(tmp_path / lib), n_saved=2,
            score_function=lambda e, s=scores: next(s),
        )  # fmt: skip
        engine = engine_mod.Engine(lambda e, b: None)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.run([0], max_epochs=2)
        files[lib] = sorted(os.listdir(tmp_path / lib))
    assert files["ignite"] == ["m_0.5000.pt", "m_nan.pt"]
    assert files["ember"] == ["m_0.5000.pt"]


@pytest.mark.parametrize("evil", ["../victim.pt", str(Path("/tmp") / "victim.pt"), "sub/../../victim.pt", "..", "link"])
def test_difference_a_loaded_state_cannot_reach_outside_the_directory(tmp_path: Path, evil: str) -> None:
    """Ignite deletes ``dirname / filename`` for whatever a loaded state names; Ember drops (with a
    warning) names that are not files it could have written inside its directory, so a crafted
    checkpoint cannot delete a file elsewhere."""
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"precious")
    d = tmp_path / "ckpts"
    handler = ember_handlers.Checkpoint({"m": nn.Linear(1, 1)}, ember_handlers.DiskSaver(d), n_saved=1)
    os.symlink(victim, d / "link")  # inside by name, outside once resolved
    with pytest.warns(UserWarning, match="ignoring"):
        handler.load_state_dict({"_saved": [(0, evil)]})
    assert handler.state_dict() == {"_saved": []}
    engine = ember_engine.Engine(lambda e, b: None)
    engine.add_event_handler(ember_engine.Events.EPOCH_COMPLETED, handler)
    engine.run([0], max_epochs=2)
    assert victim.read_bytes() == b"precious"
    assert sorted(os.listdir(d)) == ["link", "m_2.pt"]
    if evil == "../victim.pt":  # what Ignite does with the same state
        ig = ignite_handlers.Checkpoint({"m": nn.Linear(1, 1)}, ignite_handlers.DiskSaver(tmp_path / "ig"), n_saved=1)
        ig.load_state_dict({"_saved": [(0, evil)]})
        ig_engine = ignite_engine.Engine(lambda e, b: None)
        ig_engine.add_event_handler(ignite_engine.Events.EPOCH_COMPLETED, ig)
        ig_engine.run([0], max_epochs=1)
        assert not victim.exists()  # Ignite deleted a file outside its directory


def test_difference_checkpoint_runs_after_the_events_other_handlers(tmp_path: Path) -> None:
    """Ember's Checkpoint has ``ember_priority = Priority.CHECKPOINT``: attached first, it still runs
    after the other handlers of the event (here, the one that computes its score); Ignite runs handlers
    in the order they were added, so its score is not there yet."""
    outcome = {}
    for lib, (engine_mod, handlers_mod, _) in LIBS.items():
        engine = engine_mod.Engine(lambda e, b: None)
        handler = handlers_mod.Checkpoint(
            {"m": nn.Linear(1, 1)}, handlers_mod.DiskSaver(tmp_path / lib), score_name="acc"
        )
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, handler)
        engine.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(acc=0.5))
        try:
            engine.run([0], max_epochs=1)
            outcome[lib] = sorted(os.listdir(tmp_path / lib))
        except KeyError:
            outcome[lib] = KeyError
    assert outcome == {"ignite": KeyError, "ember": ["m_acc=0.5000.pt"]}
