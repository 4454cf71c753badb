"""Ember's main job: fit the digits CNN (with validation) from its config, then test it.

Run from anywhere: ``python examples/digits/main.py`` (extra ``--trainer.*``/``--model.*``
overrides are passed to the config). Exits non-zero if test accuracy is below 95%.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ember.cli import EmberCLI  # noqa: E402

TARGET_ACCURACY = 0.95


def main(argv: list[str]) -> int:
    config = ROOT / "examples" / "digits" / "config.yaml"
    start = time.perf_counter()
    cli = EmberCLI(["fit", "--config", str(config), *argv])
    fit_seconds = time.perf_counter() - start
    val = {k: round(float(v), 4) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val_")}
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    accuracy = results[0]["test_acc"]
    print(f"digits CNN: {cli.trainer.current_epoch} epochs, {cli.trainer.global_step} steps in {fit_seconds:.1f} s; last validation {val}")
    print(f"test accuracy: {accuracy:.4f} (target >= {TARGET_ACCURACY}); test loss: {results[0]['test_loss']:.4f}")
    print(f"logs: {cli.trainer.log_dir}")
    return 0 if accuracy >= TARGET_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
