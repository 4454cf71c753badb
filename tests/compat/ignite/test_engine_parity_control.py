"""terminate / terminate_epoch / interrupt from every event, exceptions and EXCEPTION_RAISED, and
what a second ``run()`` does after each, against the real Ignite."""

from __future__ import annotations

import pytest
from ignite_kit import ENGINE_EVENTS, Run, assert_same, on_both

DATA = [10, 20, 30, 40]

# (event, once=): a firing of every event the loop fires, early and late in the run
TRIGGERS = [
    ("EPOCH_STARTED", 1), ("EPOCH_STARTED", 2),
    ("GET_BATCH_STARTED", 1), ("GET_BATCH_STARTED", 5),
    ("GET_BATCH_COMPLETED", 2), ("GET_BATCH_COMPLETED", 4),
    ("ITERATION_STARTED", 1), ("ITERATION_STARTED", 6),
    ("ITERATION_COMPLETED", 3), ("ITERATION_COMPLETED", 4), ("ITERATION_COMPLETED", 8),
    ("EPOCH_COMPLETED", 1), ("EPOCH_COMPLETED", 2),
]  # fmt: skip


def _trigger(run: Run, event: str, once: int | None, action) -> None:
    event = getattr(run.Events, event)
    run.on(event if once is None else event(once=once), action)


@pytest.mark.parametrize("skip_completed", [False, True])
@pytest.mark.parametrize(("event", "once"), [*TRIGGERS, ("STARTED", None)], ids=lambda v: str(v))
def test_terminate_from_every_event_then_run_again(event, once, skip_completed):
    def scenario(side):
        run = Run(side)
        _trigger(run, event, once, lambda e: e.terminate(skip_completed=skip_completed))
        run.run(DATA, max_epochs=2)
        terminated = run.engine.should_terminate
        run.run(DATA, max_epochs=3)  # a terminated run goes on with its next epoch
        return run.log, terminated

    assert_same(scenario)


@pytest.mark.parametrize("skip_epoch_completed", [False, True])
@pytest.mark.parametrize(("event", "once"), [t for t in TRIGGERS if t[0] != "EPOCH_STARTED"], ids=lambda v: str(v))
def test_terminate_epoch_from_every_event_inside_an_epoch(event, once, skip_epoch_completed):
    def scenario(side):
        run = Run(side)
        _trigger(run, event, once, lambda e: e.terminate_epoch(skip_epoch_completed=skip_epoch_completed))
        return run.run(DATA, max_epochs=3).log

    assert_same(scenario)


@pytest.mark.parametrize("request_", ["terminate_epoch", "interrupt", "terminate"])
def test_requests_when_the_data_runs_out(request_):
    """Deliberate difference: Ignite's check point at DATALOADER_STOP_ITERATION raises RuntimeError
    (to EXCEPTION_RAISED handlers) and the epoch ends without a batch; Ember ends the epoch, pauses
    or stops the run there as at any other event."""

    def scenario(side):
        run = Run(side)
        run.on(run.Events.DATALOADER_STOP_ITERATION(once=1), lambda e: getattr(e, request_)())
        run.run([1, 2, 3], max_epochs=2, epoch_length=5)
        if request_ == "interrupt":
            run.run([1, 2, 3])
        return run.log

    ignite_log, ember_log = on_both(scenario)
    stop = ignite_log.index((1, 3, "DATALOADER_STOP_ITERATION")) + 1
    assert ember_log[:stop] == ignite_log[:stop]
    assert ignite_log[stop] == (1, 3, "EXCEPTION_RAISED", "RuntimeError")
    ember_next = {
        "terminate_epoch": [(1, 3, "TERMINATE_SINGLE_EPOCH", 3), (1, 3, "EPOCH_COMPLETED"), (2, 3, "EPOCH_STARTED")],
        # paused right after the event; the next run() fetches from the restarted data
        "interrupt": [(1, 3, "INTERRUPT"), ("RUN", 1, 3), (1, 3, "GET_BATCH_COMPLETED")],
        "terminate": [(1, 3, "TERMINATE"), (1, 3, "COMPLETED"), ("RUN", 1, 3)],
    }[request_]
    assert ember_log[stop : stop + 3] == ember_next
    ember_end = {"terminate_epoch": ("RUN", 2, 8), "interrupt": ("RUN", 2, 10), "terminate": ("RUN", 1, 3)}[request_]
    assert ember_log[-1] == ember_end


def test_terminate_epoch_at_epoch_started_is_an_error_in_ignite_and_ends_the_epoch_in_ember():
    """Deliberate difference: the Trainer ends an epoch from EPOCH_STARTED (a checkpoint saved at
    the batch where the run decided to stop); Ignite raises RuntimeError there."""

    def scenario(side):
        run = Run(side)
        run.on(run.Events.EPOCH_STARTED(once=2), lambda e: e.terminate_epoch())
        return run.run(DATA, max_epochs=3).log

    ignite_log, ember_log = on_both(scenario)
    assert (2, 4, "EXCEPTION_RAISED", "RuntimeError") in ignite_log
    assert (2, 4, "TERMINATE_SINGLE_EPOCH", 0) in ember_log and ember_log[-1] == ("RUN", 3, 8)


def test_terminate_epoch_at_started_is_an_error():
    def scenario(side):
        run = Run(side, events=[e for e in ENGINE_EVENTS if e != "EXCEPTION_RAISED"])
        run.on(run.Events.STARTED, lambda e: e.terminate_epoch())
        return run.run(DATA).log

    assert_same(scenario)


def test_terminate_epoch_from_epoch_completed_is_dropped():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate_epoch())
        return run.run(DATA, max_epochs=2).log

    assert_same(scenario)


def test_terminate_from_a_terminate_single_epoch_handler():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
        run.on(run.Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: e.terminate())
        return run.run(DATA, max_epochs=3).log

    assert_same(scenario)


@pytest.mark.parametrize(("event", "once"), [*TRIGGERS, ("STARTED", None)], ids=lambda v: str(v))
def test_interrupt_from_every_event_then_resume_until_done(event, once):
    def scenario(side):
        run = Run(side)
        _trigger(run, event, once, lambda e: e.interrupt())
        run.run(DATA, max_epochs=3, epoch_length=5)
        for _ in range(5):  # resuming continues from the very point of the interrupt
            if run.log[-2][-1] == "COMPLETED":
                break
            run.run(DATA)
        return run.log

    assert_same(scenario)


def test_interrupt_then_extend_the_run():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_COMPLETED(once=3), lambda e: e.interrupt())
        run.run(DATA, max_epochs=1)
        return run.run(DATA, max_epochs=2).log

    assert_same(scenario)


def test_interrupt_at_the_last_iteration():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_COMPLETED(once=8), lambda e: e.interrupt())
        run.run(DATA, max_epochs=2)
        return run.run(DATA).run(DATA).log

    assert_same(scenario)


def test_requests_from_the_process_function():
    def scenario(side):
        def step(engine, batch):
            if engine.state.iteration == 2:
                engine.terminate_epoch()
            if engine.state.iteration == 7:
                engine.terminate()
            return batch

        return Run(side, process=step).run(DATA, max_epochs=3).log

    assert_same(scenario)


@pytest.mark.parametrize("where", ["STARTED", "EPOCH_STARTED", "EPOCH_COMPLETED", "COMPLETED"])
def test_exception_outside_the_iterations_goes_to_exception_raised_handlers(where):
    def scenario(side):
        run = Run(side)
        run.on(getattr(run.Events, where), lambda e: (_ for _ in ()).throw(KeyError("boom")))
        run.run(DATA, max_epochs=2)
        run.run(DATA, max_epochs=2)  # and what a second run() makes of it
        return run.log

    assert_same(scenario)


@pytest.mark.parametrize("where", ["process", "GET_BATCH_STARTED", "ITERATION_COMPLETED", "STARTED"])
def test_exception_without_handlers_propagates(where):
    """The exception reaches the caller unchanged. Deliberate difference in what follows: Ignite's
    next run() returns None without running anything (the failed run's generator is spent); Ember's
    continues the run, as after terminate() (Ignite's rule: from ``iteration % epoch_length``)."""

    def scenario(side):
        calls = []

        def fail_once(*_):
            if not calls:
                calls.append(1)
                raise KeyError("boom")

        def step(engine, batch):
            if where == "process" and engine.state.iteration == 6:
                fail_once()
            return batch

        run = Run(side, process=step, events=[e for e in ENGINE_EVENTS if e != "EXCEPTION_RAISED"])
        if where != "process":
            event = getattr(run.Events, where)
            run.on(event if where == "STARTED" else event(once=6), fail_once)
        run.run(DATA, max_epochs=3)
        failed_at = len(run.log)
        again = run.engine.run(DATA, max_epochs=3)
        return run.log, failed_at, again

    (ignite_log, ignite_cut, ignite_again), (ember_log, ember_cut, ember_again) = on_both(scenario)
    assert ember_log[:ember_cut] == ignite_log[:ignite_cut]
    assert ember_log[ember_cut - 1] == ("RUN", "raises", "KeyError")
    assert ignite_again is None and len(ignite_log) == ignite_cut
    assert ember_log[-1] == (3, 12 if where == "STARTED" else 8, "COMPLETED") and ember_again is not None


def test_exception_inside_an_iteration_with_a_handler():
    """Deliberate difference: Ignite hands an exception raised inside an iteration to the
    EXCEPTION_RAISED handlers and then goes on with the run (EPOCH_COMPLETED, the next epochs, on
    the same data iterator); Ember ends the run there, as for an exception anywhere else."""

    def scenario(side):
        def step(engine, batch):
            if engine.state.iteration == 3:
                raise KeyError("boom")
            return batch

        return Run(side, process=step).run(DATA, max_epochs=2).log

    ignite_log, ember_log = on_both(scenario)
    cut = ignite_log.index((1, 3, "EXCEPTION_RAISED", "KeyError")) + 1
    assert ember_log[:cut] == ignite_log[:cut]
    assert ember_log[cut:] == [("RUN", 1, 3)]
    assert ignite_log[cut] == (1, 3, "EPOCH_COMPLETED") and ignite_log[-1] == ("RUN", 2, 7)


def test_handlers_that_terminate_stop_other_handlers_of_the_event_only_after_them():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
        run.on(run.Events.ITERATION_COMPLETED, lambda e: run.log.append(("after", e.state.iteration)))
        return run.run(DATA).log

    assert_same(scenario)


def test_should_terminate_set_directly():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_COMPLETED(once=3), lambda e: setattr(e, "should_terminate", True))
        return run.run(DATA, max_epochs=2).log

    assert_same(scenario)
