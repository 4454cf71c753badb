"""``SimpleProfiler``: the wall time of each action, reported as a table (Lightning's)."""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict

from ember.profilers.base import Profiler


class SimpleProfiler(Profiler):
    """Records how long each action takes and reports, per action, the mean duration, the number
    of calls, the total time and its share of the time since the profiler was made (``extended``;
    otherwise the mean and total only), slowest first.

    Example::

        trainer = ember.Trainer(profiler="simple")  # the report is printed when fit() ends
        trainer = ember.Trainer(profiler=SimpleProfiler(dirpath="prof", filename="perf"))  # prof/fit-perf.txt

    Durations add up over the stages a Trainer runs, as in Lightning. Starting an action that is
    running, or stopping one that is not, is a ``ValueError``.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None, filename: str | None = None, extended: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.current_actions: dict[str, float] = {}
        self.recorded_durations: dict[str, list[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self.current_actions[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        end = time.perf_counter()
        began = self.current_actions.pop(action_name, None)
        if began is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.recorded_durations[action_name].append(end - began)

    def teardown(self, stage: str | None) -> None:
        self.current_actions.clear()  # an action a failed stage left open

    def summary(self) -> str:
        sep = os.linesep
        out = self._header() + sep
        if not self.recorded_durations:
            return out
        width = max(len(k) for k in self.recorded_durations)

        def row(*cells: str) -> str:
            action, *rest = cells
            return f"{sep}|  {action:<{width}s}\t|" + "".join(f"  {c:<15}\t|" for c in rest)

        rows = [(a, math.fsum(d), len(d)) for a, d in self.recorded_durations.items()]
        if self.extended:
            header = row("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            line = sep + "-" * len(header.expandtabs())
            elapsed = time.perf_counter() - self.start_time
            calls = sum(n for _, _, n in rows)
            out += line + header + line + row("Total", "-", f"{calls}", f"{elapsed:.5}", "100 %") + line
            for action, total, n in sorted(rows, key=lambda r: r[1], reverse=True):
                out += row(action, f"{total / n:.5}", f"{n}", f"{total:.5}", f"{100.0 * total / elapsed:.5}")
        else:
            header = row("Action", "Mean duration (s)", "Total time (s)")
            line = sep + "-" * len(header.expandtabs())
            out += line + header + line
            for action, total, n in sorted(rows, key=lambda r: r[1] / r[2], reverse=True):
                out += row(action, f"{total / n:.5}", f"{total:.5}")
        return out + line + sep
