"""``ember lr_find``: the learning-rate range test (:func:`ember.tune.lr_find`) on an ``ember fit`` run.

    ember lr_find --config config.yaml [--trainer.* --model.* --data.*] [--num_training 100] [--plot lr.png]

Takes the run as ``ember fit`` does, shows the sweep's progress on stderr, then prints the suggested
learning rate and the path of the plot it saved (``lr_find.png`` in the Trainer's
``default_root_dir`` unless ``--plot`` says otherwise). Nothing is trained for real: the model is
put back as it was, and no checkpoint or log is written.
"""

from __future__ import annotations

import os
from typing import Any

from ember.tune.lr_finder import MODES

DESCRIPTION = "Find a learning rate for an `ember fit` run with the range test; prints the suggestion and saves a plot."

OPTIONS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold", "plot")


def add_arguments(p: Any) -> None:
    """The ``ember lr_find`` options, on a jsonargparse parser: ``fit``'s run arguments, then the sweep's."""
    from ember.cli.main import add_run_arguments

    add_run_arguments(p)
    p.add_argument("--min_lr", type=float, default=1e-8, help="The learning rate the sweep starts at.")
    p.add_argument("--max_lr", type=float, default=1.0, help="The learning rate the sweep ends at.")
    p.add_argument("--num_training", type=int, default=100, help="Optimizer steps in the sweep (at most).")
    p.add_argument("--mode", choices=MODES, default="exponential", help="How the rate grows from step to step.")
    p.add_argument(
        "--early_stop_threshold",
        type=float | None,
        default=4.0,
        help="Stop once the smoothed loss exceeds this many times its best (null: never).",
    )
    p.add_argument(
        "--plot", type=str | None, default=None, help="Where to save the plot (default: DEFAULT_ROOT_DIR/lr_find.png)."
    )


def _build(cfg: Any) -> tuple[Any, Any, Any]:
    """The Trainer, model and datamodule of the run, as ``ember fit`` builds them."""
    from jsonargparse import ArgumentParser

    from ember.seed import seed_everything

    if cfg.get("seed_everything") is not None:
        seed_everything(cfg.seed_everything)
    parser = ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    init = parser.instantiate(cfg)
    return init.trainer, init.model, init.get("data")


def _lr_argument(cfg: Any) -> str | None:
    """``--model.init_args.lr`` (or ``learning_rate``) when the model takes one: how to use the suggestion."""
    init_args = cfg.model.get("init_args") if hasattr(cfg.model, "get") else None
    for name in ("lr", "learning_rate"):
        if init_args is not None and name in init_args:
            return f"--model.init_args.{name}"
    return None


def run(cfg: Any) -> int:
    """Run the sweep, print the suggestion and the plot's path; returns 0, or 1 when there is no
    suggestion (too few usable points). Bad input raises (``ember`` reports it and exits with 2)."""
    from ember.tune.lr_finder import check_sweep_args, lr_find

    check_sweep_args(cfg.min_lr, cfg.max_lr, cfg.num_training, cfg.mode, cfg.early_stop_threshold)
    trainer, model, datamodule = _build(cfg)
    plot = cfg.plot or os.path.join(os.fspath(trainer.default_root_dir), "lr_find.png")
    folder = os.path.dirname(os.path.abspath(plot))
    if not os.path.isdir(folder):
        os.makedirs(folder, exist_ok=True)
    finder = lr_find(
        trainer,
        model,
        datamodule=datamodule,
        min_lr=cfg.min_lr,
        max_lr=cfg.max_lr,
        num_training=cfg.num_training,
        mode=cfg.mode,
        early_stop_threshold=cfg.early_stop_threshold,
        progress=True,
    )
    suggestion = finder.suggestion()
    finder.plot(plot)
    if suggestion is None:
        print("No learning rate suggested: too few usable points (raise --num_training or widen --min_lr..--max_lr)")
        print(f"Plot: {os.path.abspath(plot)}")
        return 1
    print(f"Suggested learning rate: {suggestion:.6g}")
    print(f"Plot: {os.path.abspath(plot)}")
    argument = _lr_argument(cfg)
    if argument is not None:
        print(f"Use it: ember fit ... {argument} {suggestion:.6g}")
    return 0
