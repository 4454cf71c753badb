"""``ember tune``: search an ``ember fit`` config's hyperparameters with Optuna.

    ember tune --config base.yaml --space space.yaml --n-trials 20
    ember tune --config base.yaml --space space.yaml --n-trials 20 \\
        --storage postgresql://user:pw@db:5432/optuna --study-name digits-lr     # on every worker

Prints a table of the study's trials at the end; ``--plots DIR`` also saves its optimisation
history and parameter importances as PNG files.
"""

from __future__ import annotations

import sys
from typing import Any

from ember.tune.study import DIRECTIONS, PRUNERS, SAMPLERS

DESCRIPTION = "Search hyperparameters of an `ember fit` config with Optuna (many processes can share one study)."


def add_arguments(p: Any) -> None:
    """The ``ember tune`` options, on a jsonargparse parser."""
    p.add_argument(
        "--config",
        type=str,
        action="append",
        required=True,
        help="The `ember fit` config file (several may be given; later ones win).",
    )
    p.add_argument(
        "--space",
        type=str,
        required=True,
        help="YAML search space: dotted config paths -> {type: float|int|categorical, ...}.",
    )
    p.add_argument("--n-trials", dest="n_trials", type=int | None, default=None, help="Trials this process runs.")
    p.add_argument("--timeout", type=float | None, default=None, help="Stop starting trials after this many seconds.")
    p.add_argument(
        "--storage",
        type=str | None,
        default=None,
        help="sqlite:///file.db, postgresql://..., redis://... (default: a SQLite file in the study directory).",
    )
    p.add_argument(
        "--study-name",
        dest="study_name",
        type=str | None,
        default=None,
        help="Processes with the same storage and name share the study.",
    )
    p.add_argument(
        "--direction", choices=DIRECTIONS, default="minimize", help="Minimize or maximize the monitored metric."
    )
    p.add_argument(
        "--monitor",
        type=str,
        default="val_loss",
        help="The logged metric a trial is scored by (at the end of its fit).",
    )
    p.add_argument(
        "--root-dir",
        dest="root_dir",
        type=str,
        default="ember_tune",
        help="Trials run in ROOT_DIR/STUDY_NAME/trial_NNNN.",
    )
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="How trials choose their values.")
    p.add_argument("--pruner", choices=PRUNERS, default="median", help="How unpromising trials are stopped early.")
    p.add_argument("--seed", type=int | None, default=None, help="Seed the sampler (give each worker its own).")
    p.add_argument(
        "--connect-timeout",
        dest="connect_timeout",
        type=float,
        default=10.0,
        help="Seconds to wait for the storage server.",
    )
    p.add_argument(
        "--plots", type=str | None, default=None, help="Save optimization_history.png and param_importances.png here."
    )


def run(cfg: Any) -> int:
    """Run ``ember tune`` with parsed arguments and print the results table; returns the exit
    status: 0 when the study has a completed trial, 1 when it has none, 130 when interrupted.
    Bad input or an unreachable storage raises (``ember`` reports it and exits with 2)."""
    from ember.tune.report import format_results, save_plots
    from ember.tune.study import optimize

    if cfg.n_trials is None and cfg.timeout is None:
        raise ValueError("give --n-trials or --timeout (or both), or the study would run until interrupted")
    ran: list[int] = []
    study_box: list[Any] = []

    def remember(study: Any, trial: Any) -> None:
        ran.append(trial.number)
        study_box[:] = [study]

    status = 0
    try:
        study = optimize(
            cfg.config,
            cfg.space,
            monitor=cfg.monitor,
            n_trials=cfg.n_trials,
            timeout=cfg.timeout,
            storage=cfg.storage,
            study_name=cfg.study_name,
            direction=cfg.direction,
            sampler=cfg.sampler,
            pruner=cfg.pruner,
            root_dir=cfg.root_dir,
            seed=cfg.seed,
            connect_timeout=cfg.connect_timeout,
            callbacks=[remember],
        )
    except KeyboardInterrupt:
        if not study_box:
            raise
        study, status = study_box[0], 130
        print("ember tune: interrupted", file=sys.stderr)
    print(format_results(study, cfg.monitor))
    print(f"This process ran {len(ran)} trial(s): {', '.join(f'#{n}' for n in ran) or '-'}")
    if cfg.plots:
        for path in save_plots(study, cfg.plots).values():
            print(f"plot: {path}")
    if status == 0 and not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        print("ember tune: no trial of the study completed", file=sys.stderr)
        status = 1
    return status
