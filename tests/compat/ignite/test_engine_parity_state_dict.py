"""``Engine.state_dict`` / ``load_state_dict`` against the real Ignite: keys, round trips on fresh
engines, resuming saved runs (epochs and ``max_iters``), Ignite-format dicts and rejected ones."""

from __future__ import annotations

import pytest
from ignite_kit import EMBER, Run, assert_same, on_both, outcome

DATA = [10, 20, 30, 40, 50]


def test_keys_are_ignites_plus_embers_two_for_an_exact_mid_epoch_resume():
    """Deliberate difference: Ember adds ``epoch`` and ``epoch_iteration`` (a mid-epoch position that
    stays exact when epochs were cut short). Ignite rejects dicts holding both ``iteration`` and
    ``epoch``, so Ember's dicts load in Ember only; Ember loads Ignite's."""

    def scenario(side, **run_kwargs):
        engine = side.engine.Engine(lambda e, b: b)
        engine.state_dict_user_keys.append("alpha")
        engine.state.alpha = 0.5
        before = engine.state_dict()
        engine.run(DATA, **run_kwargs)
        return before, engine.state_dict()

    for run_kwargs in ({"max_epochs": 2}, {"max_iters": 7}):
        (ignite_before, ignite_after), (ember_before, ember_after) = on_both(scenario, **run_kwargs)
        for ignite_sd, ember_sd in ((ignite_before, ember_before), (ignite_after, ember_after)):
            assert list(ember_sd)[: len(ignite_sd)] == list(ignite_sd)
            assert {k: ember_sd[k] for k in ignite_sd} == dict(ignite_sd)
            assert list(ember_sd)[len(ignite_sd) :] == ["epoch", "epoch_iteration"]
        assert type(ember_after).__name__ == type(ignite_after).__name__ == "OrderedDict"


@pytest.mark.parametrize("ran", ["fresh", "finished", "max_iters"])
def test_a_fresh_engine_accepts_the_state_dict_of_another(ran):
    def scenario(side):
        source = side.engine.Engine(lambda e, b: b)
        if ran == "finished":
            source.run(DATA, max_epochs=2)
        elif ran == "max_iters":
            source.run(DATA, max_iters=7)
        target = Run(side)
        target.engine.load_state_dict(source.state_dict())
        loaded = {k: getattr(target.engine.state, k) for k in ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters")}
        return loaded, target.run(DATA).log

    if ran != "max_iters":
        assert_same(scenario)
        return
    # Deliberate difference: a run stopped inside its 2nd epoch (max_iters=7, 5 per epoch) loads as
    # epoch 2 in Ember, as the live state says (Ember's dict records that the epoch was cut short);
    # Ignite derives 7 // 5 = 1 from the iteration alone.
    (ignite_loaded, ignite_log), (ember_loaded, ember_log) = on_both(scenario)
    assert ember_log == ignite_log
    assert ember_loaded == {**ignite_loaded, "epoch": 2} and ignite_loaded["epoch"] == 1


# where the run was saved: (event, once=)
SAVE_POINTS = [
    ("EPOCH_COMPLETED", 1), ("EPOCH_COMPLETED", 2), ("ITERATION_COMPLETED", 3), ("ITERATION_COMPLETED", 5),
    ("ITERATION_COMPLETED", 12), ("ITERATION_STARTED", 7), ("EPOCH_STARTED", 2), ("STARTED", None),
]  # fmt: skip


@pytest.mark.parametrize("bound", [{"max_epochs": 3}, {"max_iters": 13}, {"max_iters": 10}])
@pytest.mark.parametrize(("event", "once"), SAVE_POINTS, ids=str)
def test_resume_a_saved_run_in_a_new_engine(event, once, bound):
    """Saved mid-run, loaded into a new engine and run over the same data: the new engine runs
    only what was left (for a mid-epoch save from the start of the data: feeding it is the user's job)."""

    def scenario(side):
        first = Run(side)
        saved = []
        ev = getattr(first.Events, event)
        first.on(ev if once is None else ev(once=once), lambda e: saved.append(e.state_dict()))
        first.run(DATA, **bound)
        if not saved:
            return "not saved", first.log
        second = Run(side)
        second.engine.load_state_dict(saved[0])
        return second.run(DATA).log

    assert_same(scenario)


IGNITE_DICTS = [
    {"iteration": 7, "epoch_length": 5, "max_epochs": 3},
    {"iteration": 10, "epoch_length": 5, "max_epochs": 3},
    {"epoch": 1, "epoch_length": 5, "max_epochs": 3},
    {"iteration": 7, "epoch_length": 5, "max_iters": 12},  # only the remaining 5 iterations run
    {"iteration": 0, "epoch_length": None, "max_epochs": 2},
    {"epoch": 0, "epoch_length": None, "max_epochs": None},
    {"iteration": 15, "epoch_length": 5, "max_epochs": 3},  # a finished run: run() starts a new one
    # rejected
    {"iteration": 7, "epoch": 1, "epoch_length": 5, "max_epochs": 3},
    {"iteration": 7, "epoch_length": None, "max_epochs": 3},
    {"iteration": 7, "epoch_length": 5},
    {"iteration": 7, "epoch_length": 5, "max_epochs": 3, "max_iters": 20},
    {"epoch_length": 5, "max_epochs": 3},
    {"iteration": 17, "epoch_length": 5, "max_epochs": 2},
    {"iteration": 7, "epoch_length": 5, "max_iters": 5},
    {"iteration": 7, "epoch_length": 5, "max_epochs": 0},
]


@pytest.mark.parametrize("state_dict", IGNITE_DICTS, ids=str)
def test_ignite_format_dicts(state_dict):
    """Accepted dicts continue the same way; rejected ones raise the same error. Deliberate
    difference: a rejected dict leaves Ember's engine as it was (Ignite may have set some of it)."""

    def scenario(side):
        run = Run(side)
        loaded = outcome(lambda: run.engine.load_state_dict(state_dict))
        if loaded[0] == "raises":
            return loaded
        return run.run(DATA).log

    assert_same(scenario)
    engine = EMBER.engine.Engine(lambda e, b: b)
    before = dict(vars(engine.state))
    if outcome(lambda: engine.load_state_dict(state_dict))[0] == "raises":
        assert dict(vars(engine.state)) == before


def test_user_keys():
    def scenario(side):
        source = side.engine.Engine(lambda e, b: b)
        source.state_dict_user_keys.append("alpha")
        source.add_event_handler(side.engine.Events.STARTED, lambda e: setattr(e.state, "alpha", 0.25))
        source.run(DATA, max_epochs=2)
        target = side.engine.Engine(lambda e, b: b)
        target.state_dict_user_keys.append("alpha")
        loaded = outcome(lambda: target.load_state_dict(source.state_dict()))
        missing = outcome(lambda: target.load_state_dict({"iteration": 5, "epoch_length": 5, "max_epochs": 2}))
        return source.state_dict()["alpha"], loaded, target.state.alpha, missing

    assert_same(scenario)


def test_load_state_dict_needs_a_mapping():
    assert_same(lambda side: outcome(lambda: side.engine.Engine(lambda e, b: b).load_state_dict([("iteration", 1)])))


def test_loading_then_extending_the_bound():
    def scenario(side):
        run = Run(side)
        run.engine.load_state_dict({"iteration": 10, "epoch_length": 5, "max_epochs": 2})
        run.run(DATA, max_epochs=1)  # below the loaded epoch: raises
        run.run(DATA, max_epochs=3)  # one more epoch
        return run.log

    assert_same(scenario)
