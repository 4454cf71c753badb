"""Ignite-style training on the Engine: a process function, an evaluator with attached metrics, and
handlers (checkpointing, early stopping, a NaN guard, a timer) and a CSV logger on their events.

Nothing here uses the Trainer: this is ``ember.engine``, ``ember.metrics``, ``ember.handlers`` and
``ember.loggers`` at the level Ignite users know. Data: scikit-learn's digits (no download).

    python examples/engine_digits/main.py            # 20 epochs, prints the validation accuracy
    python examples/engine_digits/main.py --fast     # 2 epochs, for the tests
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ember.engine import Engine, Events  # noqa: E402
from ember.handlers import Checkpoint, EarlyStopping, ModelCheckpoint, TerminateOnNan, Timer  # noqa: E402
from ember.loggers import CSVLogger  # noqa: E402
from ember.metrics import Accuracy, Loss, RunningAverage  # noqa: E402
from ember.seed import seed_everything  # noqa: E402
from examples.digits.data import DigitsDataModule  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fast", action="store_true", help="2 epochs: a smoke run for the tests")
    parser.add_argument("--out", default=None, help="where checkpoints and logs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    epochs = 2 if args.fast else args.epochs
    out = Path(args.out or tempfile.mkdtemp(prefix="ember-engine-"))

    seed_everything(0)
    data = DigitsDataModule(batch_size=32)
    data.setup("fit")
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    # ----------------------------------------------------------------- the process functions
    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        model.train()
        x, y = batch
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def eval_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        x, y = batch
        return model(x), y  # (y_pred, y): what Accuracy and Loss take

    trainer = Engine(train_step)
    evaluator = Engine(eval_step)

    # ----------------------------------------------------------------- metrics
    Accuracy().attach(evaluator, "accuracy")
    Loss(F.cross_entropy).attach(evaluator, "loss")
    RunningAverage(output_transform=lambda loss: loss).attach(trainer, "running_loss")

    # ----------------------------------------------------------------- handlers
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    timer = Timer(average=True)
    timer.attach(trainer, start=Events.STARTED, resume=Events.ITERATION_STARTED,
                 pause=Events.ITERATION_COMPLETED, step=Events.ITERATION_COMPLETED)  # fmt: skip

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Engine) -> None:
        evaluator.run(val_loader)
        m = evaluator.state.metrics
        print(f"epoch {engine.state.epoch}: running loss {float(engine.state.metrics['running_loss']):.4f}, "
              f"val loss {m['loss']:.4f}, val accuracy {m['accuracy']:.4f}")  # fmt: skip

    def score(engine: Engine) -> float:
        return engine.state.metrics["accuracy"]

    # keep the 2 best models by validation accuracy; the global step is the trainer's epoch
    best = ModelCheckpoint(out / "checkpoints", filename_prefix="best", score_function=score, score_name="val_acc",
                           n_saved=2, global_step_transform=lambda *_: trainer.state.epoch)  # fmt: skip
    evaluator.add_event_handler(Events.COMPLETED, best, {"model": model})
    evaluator.add_event_handler(Events.COMPLETED, EarlyStopping(patience=5, score_function=score, trainer=trainer))

    # a logger at the Engine level: the training loss every 10 iterations, validation metrics per epoch
    logger = CSVLogger(out, name="engine_digits")
    logger.attach_output_handler(trainer, Events.ITERATION_COMPLETED(every=10), tag="training",
                                 output_transform=lambda loss: {"loss": loss})  # fmt: skip
    logger.attach_output_handler(evaluator, Events.COMPLETED, tag="validation", metric_names=["loss", "accuracy"],
                                 global_step_transform=lambda *_: trainer.state.iteration)  # fmt: skip

    # ----------------------------------------------------------------- run
    trainer.run(train_loader, max_epochs=epochs)
    logger.close()

    Checkpoint.load_objects({"model": model}, best.last_checkpoint)  # the best model back
    evaluator.run(val_loader)
    accuracy = evaluator.state.metrics["accuracy"]
    print(f"best checkpoint: {best.last_checkpoint}")
    print(f"{timer.value() * 1000:.2f} ms per training iteration on average")
    print(f"logs: {logger.log_dir}")
    print(f"validation accuracy of the best model: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
