"""``AdvancedProfiler``: ``cProfile`` statistics per action, reported with ``pstats``."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

from ember.profilers.base import Profiler

if TYPE_CHECKING:
    import cProfile


class AdvancedProfiler(Profiler):
    """One ``cProfile.Profile`` per action; the report lists, per action, the functions called
    sorted by cumulative time (``line_count_restriction``: a number of lines, or a fraction of them).

    Only one cProfile profile runs at a time: an action started inside another pauses the outer
    one until it stops, so a function's time is reported under the innermost action running it.
    ``dump_stats=True`` also writes each action's raw statistics to ``<dirpath>/<stage>-<filename>-<action>.prof``
    (for ``snakeviz``/``pstats``). Example::

        trainer = ember.Trainer(profiler=AdvancedProfiler(dirpath="prof", filename="cprofile"))
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        line_count_restriction: float = 1.0,
        dump_stats: bool = False,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        count = line_count_restriction
        if isinstance(count, bool) or not isinstance(count, (int, float)) or count < 0:
            raise ValueError(
                f"line_count_restriction={line_count_restriction!r} must be a number of lines or a fraction in [0, 1]"
            )
        if dump_stats and filename is None:
            raise ValueError("dump_stats=True needs a filename to name the .prof files (dirpath: the Trainer's log_dir)")
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats
        self.profiled_actions: dict[str, cProfile.Profile] = {}
        self._running: list[str] = []  # the innermost last; only it is enabled

    def start(self, action_name: str) -> None:
        if action_name in self._running:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        if self._running:
            self.profiled_actions[self._running[-1]].disable()
        self._running.append(action_name)
        prof = self.profiled_actions.get(action_name)
        if prof is None:  # one per action, made once (cProfile imported only when profiling)
            import cProfile

            prof = self.profiled_actions[action_name] = cProfile.Profile()
        prof.enable()

    def stop(self, action_name: str) -> None:
        if action_name not in self._running:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.profiled_actions[action_name].disable()
        self._running.remove(action_name)
        if self._running:
            self.profiled_actions[self._running[-1]].enable()

    def summary(self) -> str:
        import pstats

        sections = [self._header()]
        for action, prof in self.profiled_actions.items():
            if action in self._running:
                prof.disable()
            if self.dump_stats:
                path = self.report_path(action_name=action, extension=".prof")
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    prof.dump_stats(str(path))
            stream = io.StringIO()
            try:
                stats = pstats.Stats(prof, stream=stream)
            except TypeError:  # nothing was recorded for this action
                continue
            stats.strip_dirs().sort_stats("cumulative").print_stats(self.line_count_restriction)
            sections += [f"Profile stats for: {action}", stream.getvalue()]
        return os.linesep.join(sections)

    def teardown(self, stage: str | None) -> None:
        for action in self._running:
            self.profiled_actions[action].disable()
        self._running.clear()
        self.profiled_actions.clear()

    def __getstate__(self) -> dict[str, Any]:  # cProfile objects do not pickle (ddp_spawn sends the Trainer)
        state = dict(self.__dict__)
        state["profiled_actions"], state["_running"] = {}, []
        return state
