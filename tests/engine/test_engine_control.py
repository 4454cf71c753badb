"""terminate / terminate_epoch / interrupt and EXCEPTION_RAISED: exact event sequences."""

from __future__ import annotations

import pytest

from ember.engine import Engine, Events

WATCHED = [
    Events.STARTED,
    Events.EPOCH_STARTED,
    Events.ITERATION_COMPLETED,
    Events.EPOCH_COMPLETED,
    Events.TERMINATE_SINGLE_EPOCH,
    Events.TERMINATE,
    Events.INTERRUPT,
    Events.COMPLETED,
    Events.EXCEPTION_RAISED,
]
ABBREV = {
    "STARTED": "S",
    "EPOCH_STARTED": "ES",
    "ITERATION_COMPLETED": "IC",
    "EPOCH_COMPLETED": "EC",
    "TERMINATE_SINGLE_EPOCH": "TSE",
    "TERMINATE": "T",
    "INTERRUPT": "INT",
    "COMPLETED": "C",
    "EXCEPTION_RAISED": "EXC",
}


class Run:
    """An engine whose process function logs (epoch, iteration, batch) and whose events are logged."""

    def __init__(self, events=WATCHED) -> None:
        self.processed: list[tuple[int, int, object]] = []
        self.engine = Engine(self.step)
        self.log: list[tuple[str, int, int]] = []
        for event in events:
            self.engine.add_event_handler(event, self._recorder(ABBREV.get(event.name, event.name)))

    def step(self, engine, batch):
        self.processed.append((engine.state.epoch, engine.state.iteration, batch))
        return (engine.state.iteration, batch)

    def _recorder(self, name):
        def record(engine, *exc):
            self.log.append((name, engine.state.epoch, engine.state.iteration))

        return record


# ---------------------------------------------------------------------- terminate


def test_terminate_at_started():
    run = Run()
    run.engine.add_event_handler(Events.STARTED, lambda e: e.terminate())
    state = run.engine.run([1, 2, 3], max_epochs=2)
    assert run.log == [("S", 0, 0), ("T", 0, 0), ("C", 0, 0)]
    assert run.processed == []
    assert (state.epoch, state.iteration) == (0, 0)


def test_terminate_at_epoch_started():
    run = Run()
    run.engine.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: e.terminate())
    run.engine.run([1, 2, 3], max_epochs=3)
    assert run.log == [
        ("S", 0, 0),
        ("ES", 1, 0),
        ("IC", 1, 1),
        ("IC", 1, 2),
        ("IC", 1, 3),
        ("EC", 1, 3),
        ("ES", 2, 3),
        ("T", 2, 3),
        ("C", 2, 3),
    ]
    assert [b for _, _, b in run.processed] == [1, 2, 3]


def test_terminate_at_iteration_started_skips_that_batch():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_STARTED(once=5), lambda e: e.terminate())
    state = run.engine.run([1, 2, 3], max_epochs=3)
    assert run.log == [
        ("S", 0, 0),
        ("ES", 1, 0),
        ("IC", 1, 1),
        ("IC", 1, 2),
        ("IC", 1, 3),
        ("EC", 1, 3),
        ("ES", 2, 3),
        ("IC", 2, 4),
        ("T", 2, 5),
        ("C", 2, 5),
    ]
    assert run.processed == [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 4, 1)]  # iteration 5 never processed
    assert (state.iteration, state.batch, state.output) == (5, 2, None)


def test_terminate_at_iteration_completed():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    state = run.engine.run([1, 2, 3], max_epochs=2)
    assert run.log == [("S", 0, 0), ("ES", 1, 0), ("IC", 1, 1), ("IC", 1, 2), ("T", 1, 2), ("C", 1, 2)]
    assert (state.epoch, state.iteration, state.output) == (1, 2, (2, 2))


def test_terminate_at_epoch_completed():
    run = Run()
    run.engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    run.engine.run([1, 2], max_epochs=3)
    assert run.log == [("S", 0, 0), ("ES", 1, 0), ("IC", 1, 1), ("IC", 1, 2), ("EC", 1, 2), ("T", 1, 2), ("C", 1, 2)]


def test_terminate_from_the_process_function_stops_after_iteration_completed():
    def step(engine, batch):
        if engine.state.iteration == 2:
            engine.terminate()
        return batch

    engine = Engine(step)
    log = []
    for event in (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED, Events.TERMINATE, Events.COMPLETED):
        engine.add_event_handler(event, lambda e, name=event.name: log.append((name, e.state.iteration)))
    engine.run([1, 2, 3, 4])
    assert log == [("ITERATION_COMPLETED", 1), ("ITERATION_COMPLETED", 2), ("TERMINATE", 2), ("COMPLETED", 2)]


@pytest.mark.parametrize("event", [Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED])
def test_terminate_from_get_batch_events_fires_no_further_iteration_events(event):
    run = Run(events=[*WATCHED, Events.ITERATION_STARTED])
    # GET_BATCH_*(once=2) fire while fetching the 3rd batch (iteration is still 2)
    run.engine.add_event_handler(event(once=2), lambda e: e.terminate())
    state = run.engine.run([1, 2, 3, 4])
    assert [b for _, _, b in run.processed] == [1, 2]
    assert run.log[-3:] == [("IC", 1, 2), ("T", 1, 2), ("C", 1, 2)]
    assert state.iteration == 2
    assert state.batch == (3 if event == Events.GET_BATCH_COMPLETED else None)


def test_terminate_skip_completed():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate(skip_completed=True))
    run.engine.run([1, 2, 3])
    assert run.log == [("S", 0, 0), ("ES", 1, 0), ("IC", 1, 1), ("IC", 1, 2), ("T", 1, 2)]


def test_setting_should_terminate_directly_works_like_terminate():
    run = Run()
    flags = []

    @run.engine.on(Events.ITERATION_COMPLETED(once=2))
    def stop(engine):
        engine.should_terminate = True

    run.engine.add_event_handler(Events.TERMINATE, lambda e: flags.append(e.should_terminate))
    run.engine.run([1, 2, 3], max_epochs=2)
    assert run.log == [("S", 0, 0), ("ES", 1, 0), ("IC", 1, 1), ("IC", 1, 2), ("T", 1, 2), ("C", 1, 2)]
    assert flags == [True]
    run.engine.run([1, 2, 3], max_epochs=2)  # continues the terminated run: the flag was cleared
    assert run.engine.should_terminate is False
    assert run.engine.state.iteration == 5


def test_a_run_terminated_at_an_epoch_boundary_continues_with_the_next_epoch():
    run = Run()
    handle = run.engine.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    run.engine.run([1, 2], max_epochs=4)
    assert (run.engine.state.epoch, run.engine.state.iteration) == (2, 4)
    handle.remove()
    del run.log[:]
    state = run.engine.run([1, 2])
    assert run.log == [
        ("S", 2, 4),
        ("ES", 3, 4),
        ("IC", 3, 5),
        ("IC", 3, 6),
        ("EC", 3, 6),
        ("ES", 4, 6),
        ("IC", 4, 7),
        ("IC", 4, 8),
        ("EC", 4, 8),
        ("C", 4, 8),
    ]
    assert (state.epoch, state.iteration, state.max_epochs) == (4, 8, 4)


def test_a_run_terminated_mid_epoch_continues_with_a_fresh_epoch():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())
    run.engine.run([1, 2, 3], max_epochs=3)
    assert (run.engine.state.epoch, run.engine.state.iteration) == (2, 4)
    del run.processed[:]
    state = run.engine.run([1, 2, 3])
    # as in Ignite: the cut epoch is not resumed, the next one starts from the start of the data
    assert run.processed == [(3, 5, 1), (3, 6, 2), (3, 7, 3)]
    assert (state.epoch, state.iteration) == (3, 7)


def test_continue_with_a_larger_max_epochs_after_terminate():
    run = Run()
    run.engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    run.engine.run([1, 2], max_epochs=2)
    state = run.engine.run([1, 2], max_epochs=3)
    assert (state.epoch, state.iteration, state.max_epochs) == (3, 6, 3)
    run.engine.state.max_epochs = 5  # not done any more: the next run() continues it
    with pytest.raises(ValueError, match="`max_epochs`=2 is below the current epoch 3"):
        run.engine.run([1, 2], max_epochs=2)


# ---------------------------------------------------------------------- terminate_epoch


def test_terminate_epoch_at_iteration_completed():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    state = run.engine.run([1, 2, 3, 4], max_epochs=2)
    assert run.log == [
        ("S", 0, 0),
        ("ES", 1, 0),
        ("IC", 1, 1),
        ("IC", 1, 2),
        ("TSE", 1, 2),
        ("EC", 1, 2),
        ("ES", 2, 2),
        ("IC", 2, 3),
        ("IC", 2, 4),
        ("IC", 2, 5),
        ("IC", 2, 6),
        ("EC", 2, 6),
        ("C", 2, 6),
    ]
    # the next epoch starts from the beginning of the data (as Ignite restarts the data iterator)
    assert [(e, b) for e, _, b in run.processed] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4)]
    assert (state.epoch, state.iteration) == (2, 6)
    assert run.engine.should_terminate_single_epoch is False


def test_terminate_epoch_at_iteration_started_skips_that_batch():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_STARTED(once=2), lambda e: e.terminate_epoch())
    run.engine.run([1, 2, 3], max_epochs=2)
    assert [(e, i, b) for e, i, b in run.processed] == [(1, 1, 1), (2, 3, 1), (2, 4, 2), (2, 5, 3)]
    assert ("TSE", 1, 2) in run.log
    assert run.log[run.log.index(("TSE", 1, 2)) + 1] == ("EC", 1, 2)


def test_terminate_epoch_at_epoch_started_runs_an_empty_epoch():
    run = Run()
    run.engine.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: e.terminate_epoch())
    dsi = []
    run.engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, lambda e: dsi.append(e.state.iteration))
    run.engine.run([1, 2], max_epochs=3)
    assert run.log == [
        ("S", 0, 0),
        ("ES", 1, 0),
        ("IC", 1, 1),
        ("IC", 1, 2),
        ("EC", 1, 2),
        ("ES", 2, 2),
        ("TSE", 2, 2),
        ("EC", 2, 2),
        ("ES", 3, 2),
        ("IC", 3, 3),
        ("IC", 3, 4),
        ("EC", 3, 4),
        ("C", 3, 4),
    ]
    assert dsi == []  # the data restarted with the epoch after terminate_epoch


def test_setting_should_terminate_single_epoch_directly_works():
    run = Run()

    @run.engine.on(Events.ITERATION_COMPLETED(once=1))
    def stop(engine):
        engine.should_terminate_single_epoch = True

    state = run.engine.run([1, 2, 3], max_epochs=2)
    assert [name for name, _, _ in run.log].count("TSE") == 1
    assert state.iteration == 4


def test_terminate_epoch_at_epoch_completed_has_nothing_left_to_cut():
    run = Run()
    run.engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate_epoch())
    state = run.engine.run([1, 2], max_epochs=2)
    assert "TSE" not in [name for name, _, _ in run.log]
    assert state.iteration == 4


# ---------------------------------------------------------------------- interrupt


def reference_run(data, max_epochs):
    run = Run()
    run.engine.run(data, max_epochs=max_epochs)
    return run


@pytest.mark.parametrize(
    "interrupt_on",
    [
        Events.ITERATION_COMPLETED(once=3),
        Events.ITERATION_COMPLETED(every=2),
        Events.ITERATION_STARTED(once=7),
        Events.GET_BATCH_COMPLETED(once=4),
        Events.EPOCH_STARTED(once=2),
        Events.EPOCH_COMPLETED(once=1),
        Events.STARTED,
    ],
    ids=repr,
)
def test_interrupt_then_run_again_continues_exactly(interrupt_on):
    data, max_epochs = [10, 20, 30, 40, 50], 2
    expected = reference_run(data, max_epochs)

    run = Run()
    run.engine.add_event_handler(interrupt_on, lambda e: e.interrupt())
    outputs = []
    run.engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    run.engine.run(data, max_epochs=max_epochs)
    assert ("C", 2, 10) not in run.log
    assert run.log[-1][0] == "INT"
    calls = 1
    while run.log[-1][0] != "C":
        run.engine.run()
        calls += 1
        assert calls < 20

    assert [entry for entry in run.log if entry[0] != "INT"] == expected.log
    assert run.processed == expected.processed
    assert outputs == [(i, b) for i, b in zip(range(1, 11), data * 2)]
    assert [name for name, _, _ in run.log].count("S") == 1
    assert (run.engine.state.iteration, run.engine.state.epoch) == (10, 2)


def test_interrupt_returns_the_state_mid_run():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.interrupt())
    state = run.engine.run([1, 2, 3, 4, 5], max_epochs=2)
    assert (state.epoch, state.iteration, state.output) == (1, 3, (3, 3))
    assert run.log[-2:] == [("IC", 1, 3), ("INT", 1, 3)]
    assert run.engine.should_interrupt is False


def test_interrupted_run_can_be_extended():
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.interrupt())
    run.engine.run([1, 2, 3, 4, 5], max_epochs=2)
    state = run.engine.run(max_epochs=3)
    assert (state.epoch, state.iteration, state.max_epochs) == (3, 15, 3)
    assert [name for name, _, _ in run.log].count("S") == 1


# ---------------------------------------------------------------------- exceptions


class Boom(RuntimeError):
    pass


def failing_step_at(iteration: int, error: BaseException):
    def step(engine, batch):
        if engine.state.iteration == iteration:
            raise error
        return batch

    return step


def test_exception_with_a_handler_goes_to_the_handler_and_run_returns():
    error = Boom("bad batch")
    engine = Engine(failing_step_at(2, error))
    got = []
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: got.append((e, exc, e.state.iteration)))
    events = []
    for event in (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED, Events.COMPLETED):
        engine.add_event_handler(event, lambda e, name=event.name: events.append(name))
    state = engine.run([1, 2, 3])
    assert got == [(engine, error, 2)]
    assert got[0][1] is error
    assert events == ["ITERATION_COMPLETED"]
    assert state is engine.state
    assert engine.last_event_name == Events.EXCEPTION_RAISED


def test_exception_handler_gets_extra_args_and_may_omit_the_engine():
    error = Boom()
    engine = Engine(failing_step_at(1, error))
    got = []

    def with_engine(engine, exc, tag):
        got.append(("with_engine", exc, tag))

    def without_engine(exc):
        got.append(("without_engine", exc))

    engine.add_event_handler(Events.EXCEPTION_RAISED, with_engine, "tag")
    engine.add_event_handler(Events.EXCEPTION_RAISED, without_engine)
    engine.run([1])
    assert got == [("with_engine", error, "tag"), ("without_engine", error)]


def test_exception_without_a_handler_propagates_unchanged():
    error = Boom("bad batch")
    engine = Engine(failing_step_at(2, error))
    with pytest.raises(Boom) as excinfo:
        engine.run([1, 2, 3])
    assert excinfo.value is error
    assert excinfo.traceback[-1].name == "step"  # the original traceback, not a re-wrapped error
    assert engine.state.iteration == 2


def test_exceptions_from_handlers_and_from_the_data_are_routed_too():
    def data():
        yield 1
        raise Boom("loader broke")

    class Data:
        def __iter__(self):
            return data()

    engine = Engine(lambda e, b: b)
    got = []
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: got.append(str(exc)))
    engine.run(Data())
    assert got == ["loader broke"]

    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: 1 / 0)
    got = []
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: got.append(type(exc)))
    engine.run([1])
    assert got == [ZeroDivisionError]


def test_an_exception_handler_may_re_raise():
    error = Boom()
    engine = Engine(failing_step_at(1, error))

    @engine.on(Events.EXCEPTION_RAISED)
    def reraise(engine, exc):
        raise exc

    with pytest.raises(Boom) as excinfo:
        engine.run([1, 2])
    assert excinfo.value is error


def test_keyboard_interrupt_without_a_handler_propagates():
    engine = Engine(failing_step_at(1, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        engine.run([1, 2])


def test_engine_runs_again_after_an_exception():
    error = Boom()
    calls = {"n": 0}

    def flaky(e, b):
        calls["n"] += 1
        if calls["n"] == 2:
            raise error
        return b

    engine = Engine(flaky)
    with pytest.raises(Boom):
        engine.run([1, 2, 3])
    state = engine.run([4, 5])  # the failed one-epoch run is over: a fresh run starts
    assert (state.epoch, state.iteration, state.output) == (1, 2, 5)


def test_terminate_epoch_in_the_first_epoch_of_data_without_len():
    class Reiterable:
        def __iter__(self):
            return iter(range(4))

    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    state = run.engine.run(Reiterable(), max_epochs=2)
    assert [(e, b) for e, _, b in run.processed] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert (state.epoch_length, state.iteration) == (4, 6)  # learnt from the full second epoch


@pytest.mark.parametrize("how", ["terminate", "interrupt"])
def test_setting_max_epochs_to_none_restarts_an_unfinished_run(how):
    # Ignite's documented restart idiom: `trainer.state.max_epochs = None; trainer.run(...)`
    run = Run()
    handle = run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: getattr(e, how)())
    run.engine.run([1, 2, 3, 4, 5], max_epochs=2)
    assert run.engine.state.iteration == 3
    handle.remove()
    run.engine.state.max_epochs = None
    del run.log[:]
    state = run.engine.run([7, 8], max_epochs=1)
    assert run.log == [("S", 0, 0), ("ES", 1, 0), ("IC", 1, 1), ("IC", 1, 2), ("EC", 1, 2), ("C", 1, 2)]
    assert (state.epoch, state.iteration, state.epoch_length, state.output) == (1, 2, 2, (2, 8))


def test_interrupted_run_resumed_goes_on_with_its_own_data_unless_set_data_swaps_it():
    # as Ignite: the paused run keeps its data iterator; run()'s data is for new runs
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    run.engine.run([1, 2, 3, 4], max_epochs=1)
    run.engine.run(["a", "b", "c", "d"])
    assert [b for _, _, b in run.processed] == [1, 2, 3, 4]
    run = Run()
    run.engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    run.engine.run([1, 2, 3, 4], max_epochs=1)
    run.engine.set_data(["a", "b", "c", "d"])
    run.engine.run()
    assert [b for _, _, b in run.processed] == [1, 2, "a", "b"]
    assert run.engine.state.iteration == 4
