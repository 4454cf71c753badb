"""Hyperparameter search with Optuna through ``ember.tune``: a function objective, pruning of
unpromising trials, a results table, and Optuna's plots saved as PNG files.

Each trial trains the digits CNN (``examples/digits``) with a learning rate, dropout and width that
Optuna suggests, in its own directory (``ember.tune.trial_dir``), reporting ``val_loss`` after each
validation to a ``PruningCallback``. The study lives in a SQLite file under ``--root-dir``; run the
same command in several terminals (with the same ``--study-name``) and they share it.

    python examples/tune/main.py                       # 20 trials of up to 8 epochs
    python examples/tune/main.py --fast                # 3 tiny trials, for the tests

The same search from the command line, over the digits config (``space.yaml`` is in this folder):

    ember tune --config examples/digits/config.yaml --config examples/tune/trainer.yaml \\
               --space examples/tune/space.yaml --n-trials 20 --plots runs/tune-plots
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ember  # noqa: E402
from ember.tune import PruningCallback, best_result, format_results, optimize, record_run, save_plots, trial_dir  # noqa: E402
from examples.digits.data import DigitsDataModule  # noqa: E402
from examples.digits.model import DigitsCNN  # noqa: E402


def make_objective(fast: bool):
    def objective(trial) -> float:
        model = DigitsCNN(
            channels=trial.suggest_categorical("channels", [8, 16, 32]),
            lr=trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            dropout=trial.suggest_float("dropout", 0.0, 0.5),
        )
        trainer = ember.Trainer(
            max_epochs=1 if fast else 8,
            limit_train_batches=4 if fast else 1.0,
            limit_val_batches=2 if fast else 1.0,
            num_sanity_val_steps=0,
            callbacks=[PruningCallback(trial, monitor="val_loss")],
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=trial_dir(trial),  # ROOT_DIR/STUDY_NAME/trial_NNNN
        )
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
        record_run(trial, trainer)  # the trial remembers its log folder and best checkpoint
        return float(trainer.callback_metrics["val_loss"])

    return objective


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--study-name", default="digits")
    parser.add_argument("--root-dir", default=None, help="where the study and its trials go (default: a temporary folder)")
    parser.add_argument("--fast", action="store_true", help="3 trials of 4 batches (the test)")
    args = parser.parse_args(argv)
    root = Path(args.root_dir or tempfile.mkdtemp(prefix="ember-tune-"))
    study = optimize(
        make_objective(args.fast),
        n_trials=3 if args.fast else args.n_trials,
        study_name=args.study_name,
        direction="minimize",
        root_dir=root,
        sampler="tpe",
        pruner="median",
        seed=0,
    )
    print(format_results(study, monitor="val_loss"))
    plots = save_plots(study, root / args.study_name / "plots")
    for name, path in plots.items():
        print(f"plot {name}: {path}")
    best = best_result(study)
    return 0 if best is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
