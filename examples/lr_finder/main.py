"""The learning-rate range test: sweep the learning rate of the digits CNN from 1e-6 to 1, plot
the loss against it, take the suggested rate and train with it.

``ember.tune.lr_find`` trains on a private Trainer while the rate grows exponentially, stops once
the loss diverges, and puts the model, its optimizer and the random states back exactly as they
were, so the ``fit`` that follows starts from the same weights. ``Tuner(trainer).lr_find(model)``
is the same with Lightning's spelling (and ``update_attr=True``).

    python examples/lr_finder/main.py           # a 100-step sweep, then 5 epochs
    python examples/lr_finder/main.py --fast    # a 20-step sweep, then 10 batches, for the tests
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ember  # noqa: E402
from ember.tune import lr_find  # noqa: E402
from examples.digits.data import DigitsDataModule  # noqa: E402
from examples.digits.model import DigitsCNN  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a short sweep and a short fit (the test)")
    parser.add_argument("--out", default=None, help="where the plot and the run go (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="ember-lr-find-"))
    ember.seed_everything(0)
    data = DigitsDataModule(batch_size=32)
    model = DigitsCNN(lr=1e-3)
    trainer = ember.Trainer(max_epochs=1 if args.fast else 5, limit_train_batches=10 if args.fast else 1.0,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=out)  # fmt: skip

    finder = lr_find(trainer, model, datamodule=data, min_lr=1e-6, max_lr=1.0, num_training=20 if args.fast else 100)
    skip = 2 if args.fast else 10  # the first points of the sweep are left out of the suggestion
    suggestion = finder.suggestion(skip_begin=skip)
    if suggestion is None:
        print("no suggestion: the sweep recorded too few usable points")
        return 1
    model.hparams.lr = suggestion  # what configure_optimizers reads (update_attr=True does this with the default skip)
    plot = out / "lr_find.png"
    finder.plot(plot, skip_begin=skip)
    steps = len(finder.results["lr"])
    print(f"swept {steps} steps from {finder.results['lr'][0]:.1e} to {finder.results['lr'][-1]:.1e}"
          f"{' (stopped early: the loss diverged)' if finder.stopped_early else ''}")  # fmt: skip
    print(f"suggested learning rate: {suggestion:.2e} (model.hparams.lr is now {model.hparams.lr:.2e})")
    print(f"plot: {plot}")

    trainer.fit(model, datamodule=data)
    print(f"after fit with that rate: val_loss {float(trainer.callback_metrics['val_loss']):.4f}, "
          f"val_acc {float(trainer.callback_metrics['val_acc']):.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
