"""Event filters against the real Ignite, exhaustively: every combination of ``every``, ``once``,
``before``, ``after`` and ``event_filter`` over a grid of values (valid and invalid), on iteration,
batch, epoch and run events; then filters on custom events, with arguments, and their removal."""

from __future__ import annotations

import itertools

import pytest
from ignite_kit import Run, assert_same, on_both, outcome

EVERY = [None, 1, 2, 3, 5, 7, 0, -1, 2.5, True]
ONCE = [None, 1, 4, 13, [2, 5, 9], (3, 11), [7, 7], 0, [], [0, 3], {2, 3}, "2", True]
BEFORE = [None, 0, 1, 5, 12, 30, -1, 1.5]
AFTER = [None, 0, 1, 4, 8, 20, -1, 1.5]


def _every_third(engine, count):
    return count % 3 == 1


FILTERS = [None, _every_third]
GRID = list(itertools.product(FILTERS, EVERY, ONCE, BEFORE, AFTER))


def _kwargs(event_filter, every, once, before, after) -> dict:
    given = {"event_filter": event_filter, "every": every, "once": once, "before": before, "after": after}
    return {k: v for k, v in given.items() if v is not None}


def _build(side, event_name: str, kwargs: dict):
    """Filtering ``event_name`` with ``kwargs``: ``("ok", event)``, or the error's type."""
    return outcome(lambda: getattr(side.engine.Events, event_name)(**kwargs))


def test_which_combinations_are_accepted():
    """The same combinations raise (and with the same exception type) on both sides."""

    def scenario(side):
        results = []
        for combo in GRID:
            built = _build(side, "ITERATION_COMPLETED", _kwargs(*combo))
            results.append(built[0] if built[0] == "ok" else built)
        return results

    results = assert_same(scenario)
    assert results.count("ok") > 150  # the grid exercises many valid filters, not only errors


@pytest.mark.parametrize(
    ("event_name", "counter"),
    [("ITERATION_COMPLETED", "iteration"), ("ITERATION_STARTED", "iteration"), ("GET_BATCH_STARTED", "iteration"),
     ("GET_BATCH_COMPLETED", "iteration"), ("EPOCH_STARTED", "epoch"), ("EPOCH_COMPLETED", "epoch"),
     ("STARTED", "epoch"), ("COMPLETED", "epoch")],
)  # fmt: skip
def test_every_accepted_combination_fires_at_the_same_counts(event_name, counter):
    """Each accepted filter gets its own handler on one engine (24 iterations over 8 epochs);
    the counts at which it fires must be Ignite's."""

    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        hits: dict[int, list[int]] = {}
        for i, combo in enumerate(GRID):
            built = _build(side, event_name, _kwargs(*combo))
            if built[0] == "ok":
                hits[i] = []
                engine.add_event_handler(built[1], (lambda h: lambda e: h.append(getattr(e.state, counter)))(hits[i]))
        engine.run([1, 2, 3], max_epochs=8)
        return hits

    hits = assert_same(scenario)
    assert sum(1 for h in hits.values() if h) > (50 if event_name not in ("STARTED", "COMPLETED") else 5)


def test_the_documented_example_every_5_after_8():
    """Ignite's definition: the first count after ``after``, then every ``every`` counts."""

    def scenario(side):
        run = Run(side, events=[])
        fired = []
        run.on(side.engine.Events.ITERATION_COMPLETED(every=5, after=8), lambda e: fired.append(e.state.iteration))
        run.run(list(range(26)))
        return fired

    assert assert_same(scenario) == [9, 14, 19, 24]


def test_event_filter_signature_is_checked_when_the_filter_is_made():
    def scenario(side):
        Events = side.engine.Events
        return [
            outcome(lambda: Events.EPOCH_COMPLETED(event_filter=lambda engine: True))[0],
            outcome(lambda: Events.EPOCH_COMPLETED(event_filter=lambda: True))[0],
            outcome(lambda: Events.EPOCH_COMPLETED(event_filter=lambda engine, event, extra: True))[0],
            outcome(lambda: Events.EPOCH_COMPLETED(event_filter=lambda *args: True))[0],
            outcome(lambda: Events.EPOCH_COMPLETED(event_filter="not callable")),
            outcome(lambda: Events.EPOCH_COMPLETED()),
        ]

    assert_same(scenario)


def test_filter_gets_the_engine_and_the_count():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        calls = []
        event = side.engine.Events.EPOCH_STARTED(event_filter=lambda e, n: calls.append((e is engine, n)) or n % 2 == 0)
        fired = []
        engine.add_event_handler(event, lambda e: fired.append(e.state.epoch))
        engine.run([0, 1], max_epochs=5)
        return calls, fired

    assert_same(scenario)


def test_filtered_handlers_with_arguments_and_without_the_engine():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        seen = []
        Events = side.engine.Events
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e, tag, scale=1: seen.append((e.state.iteration, tag, scale)), "t", scale=3)
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda: seen.append("no engine"))
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=2) | Events.COMPLETED, lambda e: seen.append(("epoch", e.state.epoch)))
        engine.run([1, 2, 3, 4], max_epochs=3)
        return seen

    assert_same(scenario)


def test_has_and_remove_filtered_handlers():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        Events = side.engine.Events
        seen = []

        def handler(e):
            seen.append(e.state.iteration)

        handle = engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), handler)
        found = [engine.has_event_handler(handler), engine.has_event_handler(handler, Events.ITERATION_COMPLETED),
                 engine.has_event_handler(handler, Events.EPOCH_COMPLETED)]  # fmt: skip
        engine.run([1, 2, 3, 4])
        handle.remove()
        found.append(engine.has_event_handler(handler))
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), handler)
        engine.remove_event_handler(handler, Events.ITERATION_COMPLETED)
        engine.run([1, 2])
        return found, seen

    assert_same(scenario)


def test_filters_on_custom_events_count_by_their_state_attribute():
    def scenario(side):
        class Backprop(side.engine.EventEnum):
            BACKWARD_STARTED = "backward_started"
            OPTIM_STEP = "optim_step"

        def step(engine, batch):
            engine.state.backwards += 1
            engine.fire_event(Backprop.BACKWARD_STARTED)
            return batch

        engine = side.engine.Engine(step)
        engine.register_events(*Backprop, event_to_attr={Backprop.BACKWARD_STARTED: "backwards"})
        fired = []
        engine.add_event_handler(Backprop.BACKWARD_STARTED(every=3), lambda e: fired.append(e.state.backwards))
        engine.add_event_handler(Backprop.BACKWARD_STARTED(once=[2, 5]), lambda e: fired.append(-e.state.backwards))
        engine.run([1, 2, 3, 4], max_epochs=2)
        return fired, engine.state.get_event_attrib_value(Backprop.BACKWARD_STARTED)

    assert_same(scenario)


def test_filters_on_custom_events_without_a_state_attribute():
    """Deliberate difference: Ignite raises (RuntimeError: the event has no state attribute) when a
    filtered handler of an unmapped custom event fires; Ember counts the event's firings."""

    def scenario(side):
        class Custom(side.engine.EventEnum):
            PING = "ping"

        engine = side.engine.Engine(lambda e, b: e.fire_event(Custom.PING))
        engine.register_events(*Custom)
        fired = []
        engine.add_event_handler(Custom.PING(every=2), lambda e: fired.append(e.state.iteration))
        return outcome(lambda: engine.run([1, 2, 3, 4, 5])), fired

    (ignite_outcome, _), (ember_outcome, ember_fired) = on_both(scenario)
    assert ignite_outcome == ("raises", "RuntimeError")
    assert ember_outcome[0] == "ok" and ember_fired == [2, 4]
