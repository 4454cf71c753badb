"""A character-level GPT trained on the Python standard library's own source code (no download).

Shows the optimisation switches of the Trainer on one real model: gradient accumulation
(``accumulate_grad_batches``), gradient clipping (``gradient_clip_val``), a per-step warmup + cosine
schedule from ``configure_optimizers``, bf16 autocast (``precision="bf16-mixed"``, which runs on CPU
too) and the learning rate logged by ``LearningRateMonitor``. Ends by sampling some "Python".

    python examples/char_gpt/main.py                 # 1000 optimizer steps: long on a CPU (see docs/examples.md)
    python examples/char_gpt/main.py --fast          # a tiny model for 16 steps, for the tests
    python examples/char_gpt/main.py --precision 32-true   # where the CPU has no fast bfloat16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ember  # noqa: E402
from ember.callbacks import LearningRateMonitor  # noqa: E402
from examples.char_gpt.data import VOCAB_SIZE, StdlibText, decode, encode  # noqa: E402
from examples.char_gpt.model import CharGPT  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--precision", default="bf16-mixed", help="bf16-mixed (default), 32-true, 16-mixed (GPU)")
    parser.add_argument("--fast", action="store_true", help="a tiny model for a few steps (the test)")
    parser.add_argument("--out", default=None, help="the run's folder (default: a temporary one)")
    args = parser.parse_args(argv)
    ember.seed_everything(0)
    if args.fast:
        max_steps, block, size = 16, 32, {"n_layer": 1, "n_head": 2, "n_embd": 32}
        data = StdlibText(max_chars=40_000, block_size=block, batch_size=8)
    else:
        max_steps, block, size = args.max_steps, 128, {"n_layer": 4, "n_head": 4, "n_embd": 128}
        data = StdlibText(max_chars=2_000_000, block_size=block, batch_size=16)
    model = CharGPT(vocab_size=VOCAB_SIZE, block_size=block, warmup_steps=max(2, max_steps // 20), max_steps=max_steps,
                    **size)  # fmt: skip
    trainer = ember.Trainer(
        max_steps=max_steps,
        max_epochs=None,
        accumulate_grad_batches=2,  # one optimizer step per 2 batches: an effective batch of 2 x batch_size
        gradient_clip_val=1.0,  # clip the gradient norm (after the accumulation, before the update)
        precision=args.precision,  # bf16-mixed: bfloat16 autocast, on CPU too
        val_check_interval=max(1, max_steps // 4) * 2,  # every so many *batches* (2 per step)
        limit_val_batches=4 if args.fast else 50,
        log_every_n_steps=4,
        callbacks=[LearningRateMonitor(logging_interval="step")],
        enable_progress_bar=not args.fast,
        default_root_dir=args.out or tempfile.mkdtemp(prefix="ember-char-gpt-"),
    )
    trainer.fit(model, datamodule=data)
    val_loss = float(trainer.callback_metrics["val_loss"])
    lr = trainer.optimizers[0].param_groups[0]["lr"]  # LearningRateMonitor wrote its history to the logger
    print(f"{trainer.global_step} optimizer steps; val_loss {val_loss:.4f}; last learning rate {lr:.2e}")
    prompt = encode("def ")
    sample = decode(model.generate(prompt.unsqueeze(0), new_tokens=40 if args.fast else 300)[0])
    print("sample:\n" + sample)
    print(f"logs: {trainer.log_dir}")
    return 0 if torch.isfinite(torch.tensor(val_loss)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
