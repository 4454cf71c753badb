"""``ember tune``: search an ``ember fit`` run's hyperparameters with Optuna.

    ember tune --config base.yaml --space space.yaml --n_trials 20
    ember tune --config base.yaml --trainer.max_epochs 5 --model.init_args.width 64 \\
        --space space.yaml --n_trials 20 --storage postgresql://user:pw@db:5432/optuna --study_name digits-lr

The run is given as ``ember fit`` takes it: ``--config`` files, ``--trainer.*``, ``--model.*``,
``--data.*`` and ``--seed_everything``, with the same spelling (the tuning options too: ``--n_trials``;
the older ``--n-trials`` spellings are still accepted). The resolved run is written once to
``ROOT_DIR/STUDY_NAME/config.yaml``, and every trial fits it with its sampled values on top.
Prints a table of the study's trials at the end; ``--plots DIR`` also saves its optimisation
history and parameter importances as PNG files, labelled with the monitored metric.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ember.tune.study import DIRECTIONS, PRUNERS, SAMPLERS

DESCRIPTION = "Search hyperparameters of an `ember fit` run with Optuna (many processes can share one study)."

#: the tuning options' own names (what ``fit`` does not have)
TUNE_OPTIONS = (
    "space", "n_trials", "timeout", "storage", "study_name", "direction", "monitor", "root_dir",
    "sampler", "pruner", "seed", "connect_timeout", "plots",
)  # fmt: skip
#: earlier spellings, still accepted: ``--n-trials`` is ``--n_trials``
ALIASES = {f"--{name.replace('_', '-')}": f"--{name}" for name in TUNE_OPTIONS if "_" in name}


def add_arguments(p: Any) -> None:
    """The ``ember tune`` options, on a jsonargparse parser: ``fit``'s run arguments, then the study's."""
    from ember.cli.main import add_run_arguments

    add_run_arguments(p)
    p.add_argument(
        "--space",
        type=str,
        required=True,
        help="YAML search space: dotted config paths -> {type: float|int|categorical, ...}.",
    )
    p.add_argument("--n_trials", type=int | None, default=None, help="Trials this process runs.")
    p.add_argument("--timeout", type=float | None, default=None, help="Stop starting trials after this many seconds.")
    p.add_argument(
        "--storage",
        type=str | None,
        default=None,
        help="sqlite:///file.db, postgresql://..., redis://... (default: a SQLite file in the study directory).",
    )
    p.add_argument(
        "--study_name", type=str | None, default=None, help="Processes with the same storage and name share the study."
    )
    p.add_argument(
        "--direction", choices=DIRECTIONS, default="minimize", help="Minimize or maximize the monitored metric."
    )
    p.add_argument(
        "--monitor", type=str, default="val_loss", help="The logged metric a trial is scored by (at the end of its fit)."
    )
    p.add_argument("--root_dir", type=str, default="ember_tune", help="Trials run in ROOT_DIR/STUDY_NAME/trial_NNNN.")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="How trials choose their values.")
    p.add_argument("--pruner", choices=PRUNERS, default="median", help="How unpromising trials are stopped early.")
    p.add_argument("--seed", type=int | None, default=None, help="Seed the sampler (give each worker its own).")
    p.add_argument(
        "--connect_timeout", type=float, default=10.0, help="Seconds to wait for the storage server."
    )
    p.add_argument(
        "--plots", type=str | None, default=None, help="Save optimization_history.png and param_importances.png here."
    )


def base_config(cfg: Any) -> str:
    """The ``ember fit`` config of the run being tuned, as YAML: ``cfg`` without the tuning options."""
    import yaml
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    full = yaml.safe_load(parser.dump(cfg, skip_unset=False))
    for key in (*TUNE_OPTIONS, "config", "__path__"):
        full.pop(key, None)
    return yaml.safe_dump(full, sort_keys=False)


def write_base_config(cfg: Any, study_name: str) -> Path:
    """Write :func:`base_config` to ``ROOT_DIR/STUDY_NAME/config.yaml`` (``config-v1.yaml``, ... when
    another worker wrote a different one there) and return its path."""
    from ember.cli.save_config import config_path
    from ember.io.atomic import atomic_write_text

    folder = Path(cfg.root_dir).resolve() / study_name
    folder.mkdir(parents=True, exist_ok=True)
    text = base_config(cfg)
    path = Path(config_path(str(folder), text))
    if not path.exists():
        atomic_write_text(path, text)
    return path


def run(cfg: Any) -> int:
    """Run ``ember tune`` with parsed arguments and print the results table; returns the exit
    status: 0 when the study has a completed trial, 1 when it has none, 130 when interrupted.
    Bad input or an unreachable storage raises (``ember`` reports it and exits with 2)."""
    from ember.tune.report import format_results, save_plots
    from ember.tune.study import optimize, resolve_study_name

    if cfg.n_trials is None and cfg.timeout is None:
        raise ValueError("give --n_trials or --timeout (or both), or the study would run until interrupted")
    study_name = resolve_study_name(cfg.study_name)
    config = write_base_config(cfg, study_name)
    ran: list[int] = []
    study_box: list[Any] = []

    def remember(study: Any, trial: Any) -> None:
        ran.append(trial.number)
        study_box[:] = [study]

    status = 0
    try:
        study = optimize(
            [config],
            cfg.space,
            monitor=cfg.monitor,
            n_trials=cfg.n_trials,
            timeout=cfg.timeout,
            storage=cfg.storage,
            study_name=study_name,
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
    print(f"The run's config: {config}")
    if cfg.plots:
        for path in save_plots(study, cfg.plots, monitor=cfg.monitor).values():
            print(f"plot: {path}")
    if status == 0 and not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        print("ember tune: no trial of the study completed", file=sys.stderr)
        status = 1
    return status
