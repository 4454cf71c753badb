"""``PyTorchProfiler``: ``torch.profiler`` over a stage, each action a ``record_function`` range,
reported as ``key_averages().table()``."""

from __future__ import annotations

import os
from typing import Any

import torch

from ember.profilers.base import Profiler

_STEP_ACTION = "run_training_batch"  # a profiler schedule advances once per training batch


class PyTorchProfiler(Profiler):
    """Runs ``torch.profiler.profile`` from the first action of a stage to its end and marks every
    action with ``torch.profiler.record_function``, so the operators are grouped under the hooks
    and steps that ran them. The report is ``key_averages(group_by_input_shape).table(sort_by,
    row_limit)``. CPU activity always, CUDA activity too when CUDA is available.

    ``export_to_chrome=True`` (as Lightning) also writes a Chrome trace
    ``<dirpath>/<stage>-<filename>.pt.trace.json`` when ``filename`` is given. Other keyword
    arguments go to ``torch.profiler.profile`` (``record_shapes``, ``profile_memory``,
    ``with_stack``, ``schedule``: a schedule advances at the end of each training batch). Example::

        trainer = ember.Trainer(profiler=PyTorchProfiler(filename="torch", row_limit=15))
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        group_by_input_shapes: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: str | None = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        if isinstance(row_limit, bool) or not isinstance(row_limit, int) or row_limit < -1 or row_limit == 0:
            raise ValueError(f"row_limit={row_limit!r} must be a positive integer, or -1 for every row")
        if group_by_input_shapes and not profiler_kwargs.get("record_shapes", False):
            profiler_kwargs["record_shapes"] = True  # key_averages needs the shapes to group by them
        self.group_by_input_shapes = group_by_input_shapes
        self.export_to_chrome = export_to_chrome
        self.row_limit = row_limit
        self.sort_by_key = sort_by_key or "cpu_time_total"
        self.profiler_kwargs = profiler_kwargs
        self._profiler: Any = None
        self._ranges: dict[str, Any] = {}
        self._steps = "schedule" in profiler_kwargs

    def _begin(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        kwargs = {"activities": activities, **self.profiler_kwargs}
        self._profiler = torch.profiler.profile(**kwargs)
        self._profiler.__enter__()

    def start(self, action_name: str) -> None:
        if action_name in self._ranges:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        if self._profiler is None:
            self._begin()
        marker = torch.profiler.record_function(action_name)
        marker.__enter__()
        self._ranges[action_name] = marker

    def stop(self, action_name: str) -> None:
        marker = self._ranges.pop(action_name, None)
        if marker is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        marker.__exit__(None, None, None)
        if self._steps and action_name == _STEP_ACTION and self._profiler is not None:
            self._profiler.step()

    def _finish(self) -> Any:
        """Close the open ranges and the profiler; the finished ``torch.profiler.profile`` or None."""
        prof, self._profiler = self._profiler, None
        for marker in reversed(list(self._ranges.values())):
            marker.__exit__(None, None, None)
        self._ranges.clear()
        if prof is not None:
            prof.__exit__(None, None, None)
        return prof

    def summary(self) -> str:
        prof = self._finish()
        if prof is None:
            return ""
        if self.export_to_chrome:
            path = self.report_path(extension=".pt.trace.json")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                prof.export_chrome_trace(str(path))
        try:
            averages = prof.key_averages(group_by_input_shape=self.group_by_input_shapes)
        except AssertionError:  # a schedule that never reached an active step recorded nothing
            return ""
        table = averages.table(sort_by=self.sort_by_key, row_limit=self.row_limit)
        return os.linesep.join([self._header(), table, ""])

    def teardown(self, stage: str | None) -> None:
        self._finish()

    def __getstate__(self) -> dict[str, Any]:  # a running torch profiler does not pickle (ddp_spawn)
        state = dict(self.__dict__)
        state["_profiler"], state["_ranges"] = None, {}
        return state
