"""A study's results as a text table, and its plots as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

from ember.io.atomic import atomic_write_bytes
from ember.tune._deps import import_optuna, import_pyplot
from ember.tune.study import best_result, trial_results


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _note(checkpoint: str | None, error: str | None) -> str:
    if checkpoint:
        return checkpoint
    first = (error or "").strip().splitlines()
    return first[0][:100] if first else ""


def format_results(study: Any, monitor: str = "value") -> str:
    """A table of every trial (number, state, ``monitor`` value, parameters, checkpoint or error)
    with the best trial marked ``*``, followed by the best trial's details."""
    results = trial_results(study)
    best = best_result(study)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    lines = [
        f"Study {study.study_name!r} ({study.direction.name.lower()} {monitor}): {len(results)} trials"
        + (f" ({summary})" if summary else "")
    ]
    if not results:
        return lines[0]
    names = sorted({k for r in results for k in r.params})
    header = ["", "trial", "state", monitor, *names, "checkpoint / error"]
    rows = [
        [
            "*" if best is not None and r.number == best.number else "",
            str(r.number),
            r.state,
            _fmt(r.value),
            *(_fmt(r.params.get(n)) for n in names),
            _note(r.checkpoint_path, r.error),
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if best is None:
        lines.append("No trial completed.")
    else:
        lines.append(f"Best trial: #{best.number} with {monitor}={_fmt(best.value)}")
        lines.extend(f"  {k} = {_fmt(v)}" for k, v in sorted(best.params.items()))
        if best.checkpoint_path:
            lines.append(f"  checkpoint: {best.checkpoint_path}")
        if best.log_dir:
            lines.append(f"  logs: {best.log_dir}")
    return "\n".join(lines)


def save_plots(study: Any, directory: str | os.PathLike, monitor: str = "Objective Value") -> dict[str, Path]:
    """Save :func:`plot_figures` as ``optimization_history.png``, ``param_importances.png`` and
    (when trials reported intermediate values) ``intermediate_values.png`` under ``directory``;
    returns name -> path."""
    plt = import_pyplot()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, fig in plot_figures(study, monitor).items():
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)
        path = out / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written[name] = path
    return written


def plot_figures(study: Any, monitor: str = "Objective Value") -> dict[str, Any]:
    """The study's plots as matplotlib figures, by name (close them with ``plt.close``).

    The objective is labelled ``monitor`` (the metric the trials were scored by), and the axes that
    count trials or validation runs have whole-number ticks. A plot the study cannot have yet
    (importances need two completed trials) is skipped with a warning rather than failing.
    """
    optuna = import_optuna()
    import_pyplot()
    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": lambda s: ovm.plot_optimization_history(s, target_name=monitor),
        "param_importances": lambda s: ovm.plot_param_importances(s, target_name=monitor),
    }
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values"] = ovm.plot_intermediate_values
    figures: dict[str, Any] = {}
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot(study)
            except Exception as err:  # a plot is a by-product: never lose the study's results to it
                warnings.warn(f"{name} plot skipped: {type(err).__name__}: {err}", stacklevel=3)
                continue
        _label_axes(name, ax, monitor)
        figures[name] = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    return figures


def _label_axes(name: str, ax: Any, monitor: str) -> None:
    """Whole-number ticks where the axis counts trials or validation runs; the objective's name."""
    from matplotlib.ticker import MaxNLocator

    if not hasattr(ax, "xaxis"):
        return
    if name in ("optimization_history", "intermediate_values"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if name == "intermediate_values":
        ax.set_xlabel("Validation run")
        ax.set_ylabel(monitor)
