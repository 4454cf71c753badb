"""GPU check: Ember's GPU paths in one short run, one verdict per result, a summary table at the end.

On the device (one NVIDIA GPU; sized for an H200: estimated 4-5 minutes, not yet measured; it stops itself
within ``--budget``, 420 s by default), from the repository root, with a timeout as a last guard:

    set -o pipefail; timeout 470 python3 benchmarks/gpu_check.py 2>&1 | tee $OUT/gpu_check.log
    python benchmarks/gpu_check.py --only nosync,speed       # some checks only
    python benchmarks/gpu_check.py --dry-run                 # CPU, tiny sizes: what tests/test_gpu_check.py runs

Nothing is downloaded: the model is a GPT written below with torch.nn (GPT-2 small: 12 layers, 12
heads, 768 wide, vocabulary 50304, tied head: 124M parameters, random init), the data random tokens.
Ember is imported from this tree's ``src/`` (installed or not).

Each check runs in a child process of its own (``--child NAME``) under a time limit (its own, or
``--timeout-per-check``, never past what is left of ``--budget``): a check that hangs is killed with
its whole process group (DDP ranks, compile workers) and reported TIMEOUT, and the next check runs;
a check that raises is reported FAIL with its error. ``--dry-run`` runs all checks in one child
process (starting torch costs seconds on two cores) and skips torch.compile.

Checks and their results (``check/result``):

  nosync     bf16-mixed Trainer on the GPT-2-small model, ``self.log`` every step (a bar value and an
             epoch mean), progress bar on (drawn to /dev/null), CSV logger, 300 steps. Engine handlers
             that run before all others bracket each step, from fetching the batch to the end of the
             optimizer step (GET_BATCH_STARTED .. ITERATION_COMPLETED); batch-end hooks (bar refresh,
             log flush), epoch end and setup lie outside.
             nosync/in-step (a run all under sync_debug_mode "warn"): no synchronisation inside any
             step but the first (lazy initialisation), and none unnamed between steps; each one found is
             named by its Ember frame and the innermost frame, with its count.
             nosync/error-mode (a run with steps 2.. under "error", the rest under "warn"): nothing
             raised; else the step and the place.
             nosync/allowed: the synchronisations outside the steps, named from the Python stack
             (progress bar refresh, log flush, epoch-end log reduction, logger thread) and counted.
  speed      Steady-state steps/s (steps 6-45, clock read after a device sync) of the Trainer as
             users run it (bar on, self.log every step, CSV logger) against a hand-written bf16 loop on
             the same model and batches, interleaved in one process for 4 rounds, eager and under
             torch.compile (one compiled model shared by both): the median ratio must be >= 0.98.
             Tokens/s are printed for both.
  precision  16-mixed: an inf loss forced at step 3 is skipped by the GradScaler (weights unchanged,
             scale halved), every skip agrees with unchanged weights, and skipped steps count in
             global_step (as in Lightning); bf16-true: SKIP while ember.runtime.precision does not
             offer it; 32-true: trains, float32 weights, finite loss.
  ddp        strategy="ddp" over NCCL on every visible GPU (one GPU: world size 1, the process group
             still starts and all-reduces); bf16-mixed steps; weights equal on all ranks afterwards.
  fsdp       FSDP2 (FSDPStrategy, one fully_shard unit per transformer block) trains bf16-mixed;
             fsdp/full-checkpoint: trainer.save_checkpoint writes one full file that loads with
             weights_only=True into a plain module (strict); fsdp/reload: a new FSDP run resumes from
             it with the same weights (gathered at on_train_start) and trains on.
  resume     resume/exact: Trainer(deterministic=True), bf16-mixed, dropout 0.1 (the CUDA RNG state
             matters), shuffled data: a run stopped after step 9 of 12 (mid-epoch 2) and resumed
             from its checkpoint in a fresh model and Trainer ends with weights, optimizer state and
             step bitwise equal to the uninterrupted run. resume/cublas-config: Trainer(deterministic=
             True) set CUBLAS_WORKSPACE_CONFIG, or this torch needs none (a matmul under deterministic
             algorithms without it, in a fresh process, ran); FAIL when Ember left it unset and the
             matmul raised (the check then sets it itself and goes on).
  onnx       Module.to_onnx from the CUDA model; ONNX Runtime (CPU provider) gives the same logits
             (max error <= 1e-3 of max(1, |logits|)) at the export batch size and another one.

Verdicts: PASS the property holds on this machine; FAIL it does not (the detail says what differed:
an Ember bug, or a speed goal missed); SKIP not checked here, and why (needs CUDA in --dry-run, Ember
lacks the feature, a package is missing, the budget is spent); TIMEOUT the check ran past its limit
and was killed. The exit status is 1 when any result is FAIL or TIMEOUT.

ddp and fsdp use one process per visible GPU; ``GPU_CHECK_CPU_PROCESSES=2 python benchmarks/gpu_check.py
--dry-run --only ddp,fsdp`` tries their several-process paths on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# this tree's Ember, installed or not (the device machine has a bare copy of the tree)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import ember
from ember.callbacks import Callback, ProgressBar
from ember.engine import Events
from ember.loggers import CSVLogger

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "GPU_CHECK_RESULT "
VERDICTS = ("PASS", "FAIL", "SKIP", "TIMEOUT")

# name: time limit in seconds on the GPU
CHECK_LIMITS = {
    "nosync": 120,
    "precision": 60,
    "ddp": 60,
    "fsdp": 90,
    "resume": 60,
    "onnx": 90,
    "speed": 240,
}
DRY_LIMIT = 120  # per check in --dry-run

#: GET_BATCH_STARTED / ITERATION_COMPLETED handlers that bracket a step run before every other handler
FIRST = 1_000_000


# ====================================================================== model, data, sizes


@dataclass(frozen=True)
class GPTConfig:
    vocab: int
    block: int
    layers: int
    heads: int
    dim: int
    dropout: float = 0.0
    flash: bool = True  # F.scaled_dot_product_attention; False: written out (deterministic backward)


GPT2_SMALL = GPTConfig(vocab=50304, block=1024, layers=12, heads=12, dim=768)  # 124M parameters
GPT_SMALLER = GPTConfig(vocab=8192, block=256, layers=4, heads=4, dim=256)
GPT_TINY = GPTConfig(vocab=128, block=32, layers=2, heads=2, dim=32)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads, self.dropout, self.flash = cfg.heads, cfg.dropout, cfg.flash
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        if not cfg.flash:
            self.register_buffer("mask", torch.ones(cfg.block, cfg.block, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        p = self.dropout if self.training else 0.0
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(dim=-1)
            y = F.dropout(att, p, self.training) @ v
        return F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)), p, self.training)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(4 * cfg.dim, cfg.dim),
            nn.Dropout(cfg.dropout),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """GPT-2 (nanoGPT's layout): token and position embeddings, pre-norm blocks, tied output head."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.dim)
        self.wpe = nn.Embedding(cfg.block, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


class GPTModule(ember.Module):
    """The GPT as an Ember module: ``self.log`` every step (bar value) and an epoch mean.
    ``inf_at``: the batch index whose loss is made inf (the GradScaler check)."""

    def __init__(self, cfg: GPTConfig, net: nn.Module | None = None, inf_at: int = -1) -> None:
        super().__init__()
        self.net = net if net is not None else GPT(cfg)
        self.inf_at = inf_at

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = lm_loss(self.net(x), y)
        if batch_idx == self.inf_at:
            loss = loss * float("inf")
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_loss_mean", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return make_optimizer(self.parameters())


def token_loader(
    vocab: int, batch: int, seq: int, batches: int, pin: bool = False, shuffle: bool = False
) -> DataLoader:
    """``batches`` batches of random tokens: (inputs, next tokens), each ``batch`` x ``seq``."""
    g = torch.Generator().manual_seed(1234)
    data = torch.randint(0, vocab, (batch * batches, seq + 1), generator=g)
    return DataLoader(
        TensorDataset(data[:, :-1], data[:, 1:]), batch_size=batch, shuffle=shuffle, pin_memory=pin, drop_last=True
    )


@dataclass(frozen=True)
class Sizes:
    big: GPTConfig  # nosync, speed
    small: GPTConfig  # precision, ddp, fsdp, resume, onnx
    nosync_batch: tuple[int, int, int, int]  # batch, sequence, steps, log_every_n_steps
    speed: tuple[int, int, int, int, int]  # batch, sequence, warm-up steps, timed steps, rounds
    small_batch: tuple[int, int]  # batch, sequence


# nosync runs past 256 steps: an epoch-level self.log folds its pending values every 256 (ember.trainer.results)
GPU_SIZES = Sizes(GPT2_SMALL, GPT_SMALLER, (4, 256, 300, 25), (8, 1024, 5, 40, 4), (8, 128))
DRY_SIZES = Sizes(GPT_TINY, GPT_TINY, (2, 16, 6, 2), (2, 16, 1, 3, 1), (2, 16))


@dataclass
class Context:
    """What every check gets: dry run or not, the device, the sizes and a scratch directory."""

    dry: bool
    device: torch.device
    sizes: Sizes
    tmp: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def accelerator(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def net(self, cfg: GPTConfig) -> GPT:
        with torch.device(self.device):
            return GPT(cfg)

    def trainer(self, **options: Any) -> ember.Trainer:
        """A quiet Trainer on the context's device (no bar, logger, summary or checkpoints unless asked)."""
        base: dict[str, Any] = dict(
            accelerator=self.accelerator, devices=1, precision="bf16-mixed", logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
            default_root_dir=self.tmp, max_epochs=1,
        )  # fmt: skip
        base.update(options)
        return ember.Trainer(**base)


def report(check: str, verdict: str, detail: str) -> None:
    """One result, as a line the parent reads (global rank zero only)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    if int(os.environ.get("RANK", "0")) == 0:  # one write: other ranks share the pipe
        sys.stdout.write(RESULT_TAG + json.dumps({"check": check, "verdict": verdict, "detail": detail}) + "\n")
        sys.stdout.flush()


def passed(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def error_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def flat_state(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested state dict, keyed by its path."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in flat_state(value, f"{prefix}{key}.").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in flat_state(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): obj}


def state_differences(a: Any, b: Any) -> list[str]:
    """The leaves where two nested states differ (tensors bitwise, with the largest difference)."""
    fa, fb = flat_state(a), flat_state(b)
    out = [f"{k}: only in one" for k in sorted(fa.keys() ^ fb.keys())]
    for k in fa.keys() & fb.keys():
        va, vb = fa[k], fb[k]
        if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
            va, vb = va.detach().cpu(), vb.detach().cpu()
            if va.dtype != vb.dtype or va.shape != vb.shape:
                out.append(f"{k}: {va.dtype}{tuple(va.shape)} vs {vb.dtype}{tuple(vb.shape)}")
            elif not torch.equal(va, vb):
                diff = (va.double() - vb.double()).abs().max().item() if va.is_floating_point() else "?"
                out.append(f"{k}: max |diff| {diff}")
        elif va != vb:
            out.append(f"{k}: {va!r} != {vb!r}")
    return sorted(out)


# ====================================================================== 1. no host sync per step

#: Functions that may synchronise once in a while (never per step), by qualified name, and what to call them.
ALLOWED_SYNCS = {
    "ProgressBar._refresh": "progress bar refresh",
    "ProgressBar.on_validation_end": "progress bar refresh",
    "TrainerLogging.flush_steps": "log flush",
    "send_metrics": "log flush",
    "TrainerLogging.finish_epoch": "epoch-end log reduction",
    "MetricBuffer.flush": "logger flush",
    "MetricBuffer.close": "logger flush",
}
EMBER_DIR = os.path.dirname(os.path.realpath(ember.__file__))
Frame = tuple[str, int, str]  # file, line, qualified name


def stack_frames(skip: int = 1) -> list[Frame]:
    """The Python stack, innermost first, without the warnings machinery."""
    frame: Any = sys._getframe(skip)
    out: list[Frame] = []
    while frame is not None and len(out) < 80:
        code = frame.f_code
        if not code.co_filename.endswith(f"{os.sep}warnings.py"):
            out.append((code.co_filename, frame.f_lineno, code.co_qualname))
        frame = frame.f_back
    return out


def short_path(path: str) -> str:
    real = os.path.realpath(path)
    if real.startswith(EMBER_DIR + os.sep):
        return "ember/" + os.path.relpath(real, EMBER_DIR)
    parts = Path(path).parts
    return "/".join(parts[-2:])


def name_sync(frames: list[Frame]) -> tuple[str, bool]:
    """What a synchronisation was, from the stack at that moment (innermost first): ``(name, known)``.
    Known: an ALLOWED_SYNCS function is on the stack. Otherwise the name is the innermost Ember frame
    (and the innermost frame of all when that is not Ember's)."""
    for _, _, qualname in frames:
        if qualname in ALLOWED_SYNCS:
            return ALLOWED_SYNCS[qualname], True
    if not frames:
        return "unknown (no Python frame)", False
    inner = frames[0]
    where = f"{short_path(inner[0])}:{inner[1]} {inner[2]}"
    ours = next((f for f in frames if os.path.realpath(f[0]).startswith(EMBER_DIR + os.sep)), None)
    if ours is None or ours == inner:
        return where, False
    return f"{short_path(ours[0])}:{ours[1]} {ours[2]} -> {where}", False


class SyncWatch:
    """Brackets each training step with Engine handlers that run before all others: from
    GET_BATCH_STARTED (fetching the batch, its transfer, the process function: forward, backward,
    optimizer step) to ITERATION_COMPLETED (then batch-end hooks, log flush and bar refresh run).
    With ``strict``, steps from the second on run under ``sync_debug_mode("error")``; everything else
    under "warn". ``record`` counts a synchronisation in the region where it happened."""

    def __init__(self, trainer: ember.Trainer, cuda: bool, strict: bool) -> None:
        self.cuda, self.strict = cuda, strict
        self.region = "setup"
        self.counts: Counter[tuple[str, str, bool]] = Counter()  # (region, name, known) -> syncs
        self.steps = 0
        engine = trainer.engine
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._step_starts, priority=FIRST)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step_ends, priority=FIRST)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_ends, priority=FIRST)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed, priority=FIRST)

    def _mode(self, mode: str) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode(mode)

    def _step_starts(self, engine: Any) -> None:
        self.steps = engine.state.iteration + 1
        self.region = "step 1 (warm-up)" if self.steps == 1 else "step"
        if self.strict and self.steps > 1:
            self._mode("error")

    def _step_ends(self, engine: Any) -> None:
        self._mode("warn")
        self.region = "after step"

    def _epoch_ends(self, engine: Any) -> None:
        self._mode("warn")
        self.region = "epoch end"

    def _failed(self, engine: Any, exception: BaseException) -> None:
        self._mode("warn")  # the Trainer's own exception handling runs next; it re-raises

    def record(self, frames: list[Frame]) -> None:
        name, known = name_sync(frames)
        if threading.current_thread() is not threading.main_thread():
            name, known = f"background thread {threading.current_thread().name}: {name}", True
        self.counts[(self.region, name, known)] += 1

    def disallowed(self) -> dict[str, int]:
        """Synchronisations no step may make: any inside a step after the first, and unnamed ones
        between steps (they would happen at every step)."""
        return {
            f"{name} [{region}]": n
            for (region, name, known), n in self.counts.items()
            if region == "step" or (region == "after step" and not known)
        }

    def allowed(self) -> dict[str, int]:
        bad = self.disallowed()
        return {
            f"{name} [{region}]": n for (region, name, _), n in self.counts.items() if f"{name} [{region}]" not in bad
        }


@contextmanager
def counting_syncs(watch: SyncWatch) -> Iterator[None]:
    """Route torch's "called a synchronizing CUDA operation" warnings to ``watch.record``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=".*synchroniz")
        show = warnings.showwarning

        def hook(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if "synchroniz" in str(message):
                watch.record(stack_frames(2))
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = hook
        try:
            yield
        finally:
            if watch.cuda:
                torch.cuda.set_sync_debug_mode(0)


def sync_run(ctx: Context, net: nn.Module, strict: bool) -> tuple[SyncWatch, BaseException | None]:
    """One bf16-mixed fit as users run it (bar on, self.log every step, CSV logger) under a SyncWatch."""
    batch, seq, steps, log_every = ctx.sizes.nosync_batch
    loader = token_loader(ctx.sizes.big.vocab, batch, seq, steps, pin=ctx.cuda)
    root = Path(tempfile.mkdtemp(dir=ctx.tmp))
    with open(os.devnull, "w") as devnull:
        trainer = ctx.trainer(
            precision="bf16-mixed", max_steps=steps, logger=CSVLogger(root), log_every_n_steps=log_every,
            callbacks=[ProgressBar(file=devnull, force=True)], default_root_dir=root,
        )  # fmt: skip
        watch = SyncWatch(trainer, ctx.cuda, strict)
        if ctx.cuda:
            torch.cuda.set_sync_debug_mode("warn")
        error = None
        with counting_syncs(watch):
            try:
                trainer.fit(GPTModule(ctx.sizes.big, net=net), loader)
            except RuntimeError as err:
                error = err
            watch.region = "teardown"
    return watch, error


def where_raised(err: BaseException) -> str:
    frames: list[Frame] = []
    tb = err.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno, tb.tb_frame.f_code.co_qualname))
        tb = tb.tb_next
    name, _ = name_sync(frames[::-1])
    return name


def check_nosync(ctx: Context) -> None:
    batch, seq, steps, log_every = ctx.sizes.nosync_batch
    net = ctx.net(ctx.sizes.big)
    params = sum(p.numel() for p in net.parameters())
    run = f"bf16-mixed GPT of {params:,} parameters, batch {batch}x{seq}, {steps} steps, log every {log_every}"
    loose, error = sync_run(ctx, net, strict=False)
    if error is not None:
        raise error
    if not ctx.cuda:
        why = "needs CUDA: torch.cuda.set_sync_debug_mode watches CUDA synchronisations only"
        report("nosync/error-mode", "SKIP", f"{why}; the same {run} ran on CPU with the step handlers in place")
        report("nosync/in-step", "SKIP", why)
        report("nosync/allowed", "SKIP", why)
        return
    strict, error = sync_run(ctx, net, strict=True)
    if error is not None and "synchroniz" in str(error):
        report("nosync/error-mode", "FAIL", f"step {strict.steps} raised {error_line(error)} at {where_raised(error)}")
    elif error is not None:
        report("nosync/error-mode", "FAIL", f"the run failed: {error_line(error)} at {where_raised(error)}")
    else:
        report("nosync/error-mode", "PASS", f"{run}: steps 2-{steps} under sync_debug_mode('error'): nothing raised")
    bad = loose.disallowed()
    listed = "; ".join(f"{n}x {name}" for name, n in sorted(bad.items(), key=lambda kv: -kv[1]))
    report("nosync/in-step", passed(not bad), f"'warn' run: {listed}" if bad else f"'warn' run: none in {steps} steps")
    good = loose.allowed()
    listed = "; ".join(f"{n}x {name}" for name, n in sorted(good.items(), key=lambda kv: -kv[1])) or "none"
    flushes = steps // log_every
    report(
        "nosync/allowed",
        "PASS",
        f"'warn' run, {steps} steps, {flushes} log flushes, bar at 10 Hz: {listed} (no 'log flush' entry: the "
        "flushes made no synchronisation)",
    )


# ====================================================================== 2. speed


class StepClock(Callback):
    """Reads the clock (after a device sync) at the end of steps ``start`` and ``stop`` (1-based)."""

    def __init__(self, ctx: Context, start: int, stop: int) -> None:
        self.ctx, self.start, self.stop = ctx, start, stop
        self.t0 = self.t1 = 0.0

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 == self.start:
            self.ctx.sync()
            self.t0 = time.perf_counter()
        elif batch_idx + 1 == self.stop:
            self.ctx.sync()
            self.t1 = time.perf_counter()


def hand_written_rate(ctx: Context, model: nn.Module, loader: DataLoader, warm: int, steps: int) -> float:
    """Steps/s of steps ``warm``+1 .. ``warm``+``steps`` of a plain bf16 loop (the same step as the Trainer's)."""
    opt = make_optimizer(model.parameters())
    model.train()
    t0 = 0.0
    for i, (x, y) in enumerate(loader, start=1):
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            loss = lm_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == warm:
            ctx.sync()
            t0 = time.perf_counter()
        elif i == warm + steps:
            ctx.sync()
            return steps / (time.perf_counter() - t0)
    raise RuntimeError(f"the loader ran out before step {warm + steps}")


def trainer_rate(ctx: Context, module: GPTModule, loader: DataLoader, warm: int, steps: int) -> float:
    """The same steps through ember.Trainer as users run it: bar on, self.log every step, CSV logger."""
    clock = StepClock(ctx, warm, warm + steps)
    root = Path(tempfile.mkdtemp(dir=ctx.tmp))
    with open(os.devnull, "w") as devnull:
        trainer = ctx.trainer(
            precision="bf16-mixed", max_steps=warm + steps, logger=CSVLogger(root), default_root_dir=root,
            callbacks=[ProgressBar(file=devnull, force=True), clock],
        )  # fmt: skip
        trainer.fit(module, loader)
    return steps / (clock.t1 - clock.t0)


def check_speed(ctx: Context) -> None:
    batch, seq, warm, steps, rounds = ctx.sizes.speed
    cfg = ctx.sizes.big
    loader = token_loader(cfg.vocab, batch, seq, warm + steps, pin=ctx.cuda)
    net = ctx.net(cfg)
    tokens = batch * seq
    for label in ("eager", "compiled"):
        check = f"speed/{label}"
        if label == "compiled" and ctx.dry:
            why = "torch.compile takes 10 s (dynamo tracing alone) to minutes (inductor) on two CPU cores"
            report(check, "SKIP", f"--dry-run: {why}; the same code runs eager above")
            continue
        try:
            model = net if label == "eager" else torch.compile(net)
            module = GPTModule(cfg, net=model)
            t0 = time.perf_counter()
            hand_written_rate(ctx, model, loader, warm, steps)
            trainer_rate(ctx, module, loader, warm, steps)
            first = time.perf_counter() - t0
            ratios, ours, theirs = [], [], []
            for r in range(rounds):
                if r % 2 == 0:
                    hand = hand_written_rate(ctx, model, loader, warm, steps)
                    rate = trainer_rate(ctx, module, loader, warm, steps)
                else:
                    rate = trainer_rate(ctx, module, loader, warm, steps)
                    hand = hand_written_rate(ctx, model, loader, warm, steps)
                ours.append(rate)
                theirs.append(hand)
                ratios.append(rate / hand)
        except Exception as err:  # one variant failing (a compile error) must not hide the other's numbers
            report(check, "FAIL", error_line(err))
            continue
        ratio, mine, hand = statistics.median(ratios), statistics.median(ours), statistics.median(theirs)
        detail = (
            f"Trainer/hand-written steps/s {ratio:.3f} (median of {rounds} interleaved rounds, {min(ratios):.3f}-"
            f"{max(ratios):.3f}; goal >= 0.98); Trainer {mine:.2f} steps/s = {mine * tokens:,.0f} tokens/s, "
            f"hand-written {hand:.2f} steps/s = {hand * tokens:,.0f} tokens/s; batch {batch}x{seq}, {steps} timed "
            f"steps after {warm}; first pair of runs {first:.1f} s"
        )
        if ctx.dry:
            report(check, "SKIP", f"goal judged on the GPU only (a tiny model on CPU measures overhead): {detail}")
        else:
            report(check, passed(ratio >= 0.98), detail)


# ====================================================================== 3. precision paths


class StepRecorder(Callback):
    """Per training step: did the weights change, the loss scale before and after, global_step after."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._before: list[torch.Tensor] = []
        self._scale: float | None = None

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        self._before = [p.detach().clone() for p in module.parameters()]
        scaler = trainer.precision_plugin.scaler
        self._scale = scaler.get_scale() if scaler is not None else None

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        changed = any(not torch.equal(a, p.detach()) for a, p in zip(self._before, module.parameters()))
        scaler = trainer.precision_plugin.scaler
        after = scaler.get_scale() if scaler is not None else None
        self.steps.append(
            {"batch_idx": batch_idx, "changed": changed, "scale": self._scale, "scale_after": after,
             "global_step": trainer.global_step}
        )  # fmt: skip


def precision_run(ctx: Context, precision: str, steps: int, inf_at: int = -1) -> tuple[GPTModule, StepRecorder, Any]:
    batch, seq = ctx.sizes.small_batch
    cfg = ctx.sizes.small
    module = GPTModule(cfg, net=ctx.net(cfg), inf_at=inf_at)
    recorder = StepRecorder()
    trainer = ctx.trainer(precision=precision, max_steps=steps, callbacks=[recorder])
    trainer.fit(module, token_loader(cfg.vocab, batch, seq, steps, pin=ctx.cuda))
    return module, recorder, trainer


def check_precision(ctx: Context) -> None:
    steps, inf_at = 6, 2
    # 16-mixed: the forced inf step is skipped by the GradScaler and still counted
    try:
        module, rec, trainer = precision_run(ctx, "16-mixed", steps, inf_at)
        forced = rec.steps[inf_at]
        skipped = [s for s in rec.steps if s["scale_after"] < s["scale"]]
        consistent = all((not s["changed"]) == (s["scale_after"] < s["scale"]) for s in rec.steps)
        ok = (
            not forced["changed"] and forced["scale_after"] == forced["scale"] / 2 and consistent
            and any(s["changed"] for s in rec.steps) and finite(module) and trainer.global_step == steps
        )  # fmt: skip
        report(
            "precision/16-mixed",
            passed(ok),
            f"inf loss at step {inf_at + 1}: weights {'changed' if forced['changed'] else 'unchanged'}, scale "
            f"{forced['scale']:g} -> {forced['scale_after']:g}; {len(skipped)} step(s) skipped in all "
            f"({len(skipped) - 1} overflow(s) besides), skips and unchanged weights agree: {consistent}; "
            f"global_step {trainer.global_step} of {steps} (skipped steps count); weights finite: {finite(module)}",
        )
    except Exception as err:
        report("precision/16-mixed", "FAIL", error_line(err))
    # bf16-true: only if Ember offers it
    try:
        from ember.runtime import resolve_precision

        resolve_precision("bf16-true")
    except ValueError as err:
        report("precision/bf16-true", "SKIP", f"Ember does not support it (ember.runtime.precision): {error_line(err)}")
    else:
        try:
            module, rec, trainer = precision_run(ctx, "bf16-true", 4)
            dtypes = {str(p.dtype) for p in module.parameters()}
            ok = dtypes == {"torch.bfloat16"} and all(s["changed"] for s in rec.steps) and finite(module)
            report("precision/bf16-true", passed(ok), f"weights {dtypes}, every step updated them, finite")
        except Exception as err:
            report("precision/bf16-true", "FAIL", error_line(err))
    # 32-true
    try:
        module, rec, trainer = precision_run(ctx, "32-true", 4)
        dtypes = {str(p.dtype) for p in module.parameters()}
        loss = float(trainer.callback_metrics["train_loss"])
        ok = dtypes == {"torch.float32"} and all(s["changed"] for s in rec.steps) and finite(module)
        ok = ok and math.isfinite(loss)
        report(
            "precision/32-true",
            passed(ok),
            f"weights {sorted(dtypes)}, {sum(s['changed'] for s in rec.steps)} of 4 steps updated them, "
            f"last loss {loss:.3f}, finite: {finite(module)}",
        )
    except Exception as err:
        report("precision/32-true", "FAIL", error_line(err))


# ====================================================================== 4. distributed


class CollectiveProbe(Callback):
    """At the start of training: is the process group up, its backend and size, and does an
    all-reduce of (rank + 1) over the ranks give world * (world + 1) / 2."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_train_start(self, trainer: Any, module: Any) -> None:
        import torch.distributed as dist

        self.seen = {"initialized": dist.is_initialized()}
        if not dist.is_initialized():
            return
        world = dist.get_world_size()
        t = torch.full((4,), float(dist.get_rank() + 1), device=next(module.parameters()).device)
        dist.all_reduce(t)
        self.seen.update(backend=dist.get_backend(), world=world, sum=t[0].item(), expected=world * (world + 1) / 2)


def weights_agree_across_ranks(module: nn.Module) -> bool:
    import torch.distributed as dist

    flat = torch.cat([p.detach().float().reshape(-1) for p in module.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return torch.equal(hi, lo)


def processes(ctx: Context) -> int:
    """One per visible GPU; on the CPU one, or GPU_CHECK_CPU_PROCESSES (to try the several-rank paths)."""
    return torch.cuda.device_count() if ctx.cuda else int(os.environ.get("GPU_CHECK_CPU_PROCESSES", "1"))


def check_ddp(ctx: Context) -> None:
    from ember.runtime import DDPStrategy

    n, steps = processes(ctx), 4
    batch, seq = ctx.sizes.small_batch
    cfg = ctx.sizes.small
    module = GPTModule(cfg, net=ctx.net(cfg))
    probe = CollectiveProbe()
    trainer = ctx.trainer(devices=n, strategy=DDPStrategy(timeout=60), max_steps=steps, callbacks=[probe])
    trainer.fit(module, token_loader(cfg.vocab, batch, seq, steps * n))
    seen = probe.seen
    agree = weights_agree_across_ranks(module)
    loss = float(trainer.callback_metrics["train_loss"])
    backend = "nccl" if ctx.cuda else "gloo"
    ok = (
        seen.get("initialized") and seen.get("backend") == backend and seen.get("world") == n
        and seen.get("sum") == seen.get("expected") and trainer.global_step == steps and agree
        and math.isfinite(loss) and finite(module)
    )  # fmt: skip
    detail = (
        f"process group {seen}; bf16-mixed, {trainer.global_step} steps, last loss {loss:.3f}, "
        f"weights equal on all ranks: {agree}"
    )
    if ctx.cuda:
        report("ddp/nccl", passed(bool(ok)), detail)
    else:
        report("ddp/gloo", passed(bool(ok)), f"--dry-run on CPU: {detail}")
        report("ddp/nccl", "SKIP", "needs CUDA: NCCL runs on GPUs only (the same DDP path ran over gloo above)")


class FullWeightsAtStart(Callback):
    """The full (gathered) weights as training starts, after a checkpoint was restored (every rank
    takes part; rank zero gets them)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: Any, module: Any) -> None:
        state = trainer.dump_checkpoint(weights_only=True)["state_dict"]
        self.state = {k: v.detach().clone() for k, v in state.items()}  # not views of the weights: they train on


def check_fsdp(ctx: Context) -> None:
    from ember.runtime import FSDPStrategy

    n, first, more = processes(ctx), 3, 2
    batch, seq = ctx.sizes.small_batch
    cfg = ctx.sizes.small
    data = token_loader(cfg.vocab, batch, seq, (first + more) * n)
    path = ctx.tmp / "fsdp_full.ckpt"
    backend = "nccl" if ctx.cuda else "gloo on CPU"

    def fsdp_trainer(max_steps: int, callbacks: list[Any]) -> ember.Trainer:
        return ctx.trainer(
            devices=n, strategy=FSDPStrategy(auto_wrap_policy={Block}, timeout=60), max_steps=max_steps,
            max_epochs=None, callbacks=callbacks,
        )  # fmt: skip

    trainer = fsdp_trainer(first, [])
    trainer.fit(GPTModule(cfg, net=ctx.net(cfg)), data)
    loss = float(trainer.callback_metrics["train_loss"])
    trainer.save_checkpoint(path)  # every rank: FSDP gathers the full weights, rank zero writes
    if trainer.world_size > 1:  # save_checkpoint returns on the other ranks before rank zero's file exists
        torch.distributed.barrier()
    report(
        "fsdp/train",
        passed(trainer.global_step == first and math.isfinite(loss)),
        f"FSDP2 over {n} process(es) ({backend}), one unit per block, bf16-mixed: {trainer.global_step} steps, "
        f"last loss {loss:.3f}",
    )
    saved: dict[str, Any] = {}
    if trainer.is_global_zero:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        plain = GPTModule(cfg)
        problems = plain.load_state_dict(saved["state_dict"], strict=True)
        ok = not problems.missing_keys and not problems.unexpected_keys and finite(plain)
        report(
            "fsdp/full-checkpoint",
            passed(ok),
            f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB, loads with weights_only=True, {len(saved['state_dict'])} "
            f"tensors into a plain module (strict), finite; optimizer states: {len(saved.get('optimizer_states', []))}",
        )
    start = FullWeightsAtStart()
    resumed = fsdp_trainer(first + more, [start])
    module = GPTModule(cfg, net=ctx.net(cfg))
    resumed.fit(module, data, ckpt_path=path)
    after = resumed.dump_checkpoint(weights_only=True)["state_dict"]
    if resumed.is_global_zero:
        same = state_differences(saved["state_dict"], start.state)
        unchanged = not state_differences(saved["state_dict"], after)
        ok = not same and not unchanged and resumed.global_step == first + more
        detail = (
            f"resumed under FSDP at step {first}: weights equal to the checkpoint's"
            if not same
            else f"weights after reload differ from the checkpoint: {'; '.join(same[:4])}"
        )
        report(
            "fsdp/reload",
            passed(ok),
            f"{detail}; trained on to global_step {resumed.global_step} (weights changed: {not unchanged})",
        )


# ====================================================================== 5. exact resume


class Crash(RuntimeError):
    """The simulated failure."""


class SaveThenCrash(Callback):
    """Saves a checkpoint at the end of step ``at``, then raises :class:`Crash`."""

    def __init__(self, at: int, path: Path) -> None:
        self.at, self.path = at, path

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.at:
            trainer.save_checkpoint(self.path)
            raise Crash(f"simulated crash after step {self.at}")


def cublas_config_needed() -> tuple[bool | None, str]:
    """Whether a CUDA matmul raises under deterministic algorithms without CUBLAS_WORKSPACE_CONFIG (in a
    fresh process: torch reads the variable once); None when the probe failed otherwise. And what it said."""
    code = (
        "import torch; torch.use_deterministic_algorithms(True); "
        "a = torch.ones(8, 8, device='cuda'); print((a @ a).sum().item())"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    said = (out.stderr.strip().splitlines() or [out.stdout.strip()])[-1][:200]
    if out.returncode == 0:
        return False, said
    if "CUBLAS_WORKSPACE_CONFIG" in out.stderr:
        return True, said
    return None, said


def check_resume(ctx: Context) -> None:
    epochs, per_epoch, stop_at = 2, 6, 9  # stopped in the middle of the second epoch
    batch, seq = ctx.sizes.small_batch
    cfg = replace(ctx.sizes.small, dropout=0.1, flash=False)  # dropout: the CUDA RNG state matters
    path = ctx.tmp / "interrupted.ckpt"
    options: dict[str, Any] = dict(deterministic=True, max_epochs=epochs, precision="bf16-mixed")
    ctx.trainer(**options)  # before any CUDA matmul here: torch reads the variable once, at the first
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    why = f"CUBLAS_WORKSPACE_CONFIG={env!r} after Trainer(deterministic=True)"
    if not ctx.cuda:
        report("resume/cublas-config", "SKIP", f"needs CUDA (cuBLAS); here {why}")
    elif env is not None:
        report("resume/cublas-config", "PASS", why)
    else:
        needed, said = cublas_config_needed()
        if needed is None:
            report("resume/cublas-config", "SKIP", f"{why}; the probe failed: {said}")
        elif needed:
            report(
                "resume/cublas-config",
                "FAIL",
                f"{why}: a CUDA matmul under deterministic algorithms raises without it ({said}); Lightning sets "
                "':4096:8'. Set here to go on",
            )
        else:
            report("resume/cublas-config", "PASS", f"{why}, and this torch/CUDA needs none: a matmul ran")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"

    def loader() -> DataLoader:
        return token_loader(cfg.vocab, batch, seq, per_epoch, pin=ctx.cuda, shuffle=True)

    def state(trainer: ember.Trainer, module: nn.Module) -> dict[str, Any]:
        return {
            "model": module.state_dict(),
            "optimizers": [o.state_dict() for o in trainer.optimizers],
            "global_step": trainer.global_step,
        }

    ember.seed_everything(0)
    full_module = GPTModule(cfg, net=ctx.net(cfg))
    full = ctx.trainer(**options)
    full.fit(full_module, loader())
    expected = state(full, full_module)

    ember.seed_everything(0)
    crashed = ctx.trainer(**options, callbacks=[SaveThenCrash(stop_at, path)])
    try:
        crashed.fit(GPTModule(cfg, net=ctx.net(cfg)), loader())
        raise RuntimeError("the interrupted run did not stop")
    except Crash:
        pass
    ember.seed_everything(99)  # the checkpoint must bring back every RNG state itself
    module = GPTModule(cfg, net=ctx.net(cfg))
    resumed = ctx.trainer(**options)
    resumed.fit(module, loader(), ckpt_path=path)
    diffs = state_differences(expected, state(resumed, module))
    report(
        "resume/exact",
        passed(not diffs),
        f"{ctx.device.type}, deterministic, bf16-mixed, dropout 0.1, shuffled data: stopped after step {stop_at} of "
        f"{epochs * per_epoch} (epoch 2), resumed from its checkpoint: "
        + ("weights, optimizer state and step bitwise equal to the uninterrupted run" if not diffs
           else f"{len(diffs)} differences: {'; '.join(diffs[:5])}"),
    )  # fmt: skip


# ====================================================================== 6. ONNX


def check_onnx(ctx: Context) -> None:
    try:
        import onnxruntime
    except ImportError as err:
        report("onnx/cuda-export", "SKIP", f"onnxruntime is not installed: {error_line(err)}")
        return
    _, seq = ctx.sizes.small_batch
    cfg = ctx.sizes.small
    module = GPTModule(cfg, net=ctx.net(cfg)).eval()
    path = ctx.tmp / "gpt.onnx"
    x = torch.randint(0, cfg.vocab, (2, seq), device=ctx.device)
    t0 = time.perf_counter()
    module.to_onnx(path, x)
    seconds = time.perf_counter() - t0
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    errors = []
    for rows in (2, 3):  # the export's batch size and another one (the batch axis is dynamic)
        tokens = torch.randint(0, cfg.vocab, (rows, seq), device=ctx.device)
        with torch.no_grad():
            ref = module(tokens).float().cpu().numpy()
        got = session.run(None, {name: tokens.cpu().numpy()})[0]
        scale = max(1.0, float(abs(ref).max()))
        errors.append(float(abs(got - ref).max()) / scale if got.shape == ref.shape else float("inf"))
    detail = (
        f"exported from the {ctx.device.type} model in {seconds:.1f} s ({path.stat().st_size / 2**20:.1f} MiB); "
        f"ONNX Runtime {onnxruntime.__version__} CPU vs torch, batches 2 and 3: max relative error "
        f"{', '.join(f'{e:.2e}' for e in errors)} (limit 1e-3)"
    )
    ok = all(e <= 1e-3 for e in errors)
    if ctx.cuda:
        report("onnx/cuda-export", passed(ok), detail)
    else:
        report("onnx/cpu-export", passed(ok), f"--dry-run: {detail}")
        report("onnx/cuda-export", "SKIP", "needs CUDA: --dry-run exported the CPU model instead (above)")


# ====================================================================== a check's own process

CHECKS: dict[str, Callable[[Context], None]] = {
    "nosync": check_nosync,
    "precision": check_precision,
    "ddp": check_ddp,
    "fsdp": check_fsdp,
    "resume": check_resume,
    "onnx": check_onnx,
    "speed": check_speed,
}


def child_main(names: list[str], dry: bool) -> int:
    """Run checks in this process, in order; results go to stdout as RESULT_TAG lines. A check that
    raises is reported FAIL (with its traceback above) and the next one runs. Returns the exit status."""
    if not dry and not torch.cuda.is_available():
        for name in names:
            report(name, "FAIL", "no CUDA device is visible (run with --dry-run on a machine without a GPU)")
        return 1
    device = torch.device("cpu") if dry else torch.device("cuda", 0)
    where = "CPU" if dry else f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    print(f"torch {torch.__version__} on {where}; ember {ember.__version__} from {EMBER_DIR}", flush=True)
    status = 0
    with scratch_dir() as scratch:
        for name in names:
            t0 = time.perf_counter()
            tmp = scratch / name
            tmp.mkdir(exist_ok=True)
            torch.manual_seed(0)
            try:
                CHECKS[name](Context(dry, device, DRY_SIZES if dry else GPU_SIZES, tmp))
            except Exception as err:
                traceback.print_exc()
                report(name, "FAIL", f"the check raised {error_line(err)}")
                status = 1
            print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return status


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory for this process's checks, shared with the other ranks that a distributed
    Trainer starts from it (they inherit the environment, and read rank zero's checkpoints)."""
    shared = os.environ.get("GPU_CHECK_TMP")
    if shared and int(os.environ.get("RANK", "0")) != 0:
        yield Path(shared)  # rank zero removes it
        return
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        os.environ["GPU_CHECK_TMP"] = tmp
        try:
            yield Path(tmp)
        finally:
            os.environ.pop("GPU_CHECK_TMP", None)


# ====================================================================== the parent: runs each check


def format_row(row: dict[str, str], width: int = 0) -> str:
    detail = row["detail"]
    if width and len(detail) > width:
        detail = detail[: width - 3] + "..."
    return f"{row['verdict']:<7}  {row['check']:<26} {detail}"


def run_child(command: list[str], limit: float, label: str, rows: list[dict[str, str]]) -> tuple[int | None, str]:
    """Run ``command`` (a check's child process) with its output streamed, prefixed by ``label``;
    its result lines are parsed into ``rows`` (and printed as verdict lines) as they come. After
    ``limit`` seconds the child's whole process group is killed. Returns (exit code, or None when
    it was killed; its last line of output that is not a result)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        env=env, cwd=ROOT,
    )  # fmt: skip
    last = [""]

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT_TAG):
                try:
                    row = json.loads(line[len(RESULT_TAG) :])
                except ValueError:
                    row = {"check": label, "verdict": "FAIL", "detail": f"unreadable result line: {line!r}"}
                rows.append(row)
                print(format_row(row), flush=True)
            else:
                print(f"  {label}| {line}", flush=True)
                if line.strip():
                    last[0] = line.strip()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and whatever it started (DDP ranks, compile workers)
        except ProcessLookupError:
            pass
        proc.wait()
        code = None
    reader.join(timeout=10)
    return code, last[0]


def parent_main(args: argparse.Namespace) -> int:
    names = list(CHECK_LIMITS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in CHECK_LIMITS]
        if unknown:
            print(f"--only: unknown check(s) {unknown}; choose from {names}", file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    budget = args.budget if args.budget is not None else (300.0 if args.dry_run else 420.0)
    mode = "dry run (CPU, tiny sizes)" if args.dry_run else "GPU run"
    print(f"gpu_check: {mode}; checks {', '.join(names)}; budget {budget:.0f} s", flush=True)
    # on the GPU a process per check (isolation, a time limit each); in --dry-run one process for all
    # of them (starting torch costs seconds on two cores)
    groups = [names] if args.dry_run else [[n] for n in names]
    start = time.monotonic()
    rows: list[dict[str, str]] = []
    times: dict[str, float] = {}

    def add(row: dict[str, str]) -> None:
        rows.append(row)
        print(format_row(row), flush=True)

    for group in groups:
        label = ",".join(group)
        left = budget - (time.monotonic() - start)
        own = sum(args.timeout_per_check or (DRY_LIMIT if args.dry_run else CHECK_LIMITS[n]) for n in group)
        limit = min(own, left)
        if left < 15:
            for name in group:
                add(
                    {
                        "check": name,
                        "verdict": "SKIP",
                        "detail": f"not run: {left:.0f} s of the {budget:.0f} s budget left",
                    }
                )
            continue
        print(f"--- {label} (limit {limit:.0f} s)", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--child", label]
        if args.dry_run:
            command.append("--dry-run")
        t0 = time.monotonic()
        code, last = run_child(command, limit, label, rows)
        times[label] = time.monotonic() - t0
        for name in group:
            if any(r["check"] == name or r["check"].startswith(name + "/") for r in rows):
                continue
            if code is None:
                add({"check": name, "verdict": "TIMEOUT", "detail": f"killed after {limit:.0f} s; last output: {last}"})
            elif code != 0:
                add({"check": name, "verdict": "FAIL", "detail": f"the check exited with code {code}: {last}"})
            else:
                add({"check": name, "verdict": "FAIL", "detail": "the check reported no result"})
        if code is None and all(r["verdict"] != "TIMEOUT" for r in rows if r["check"].split("/")[0] in group):
            add({"check": label, "verdict": "TIMEOUT", "detail": f"killed after {limit:.0f} s; last output: {last}"})
    total = time.monotonic() - start
    print(f"\n=== gpu_check summary: {mode}, {total:.0f} s of {budget:.0f} s ===")
    print(f"{'verdict':<7}  {'check/result':<26} detail")
    for row in rows:
        print(format_row(row, width=170))
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    spent = ", ".join(f"{n} {t:.0f}" for n, t in times.items())
    print("  ".join(f"{v} {n}" for v, n in counts.items()) + f"   (seconds: {spent})")
    return 1 if counts["FAIL"] or counts["TIMEOUT"] else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes; skips what needs CUDA")
    parser.add_argument("--only", default="", help=f"comma-separated checks among {', '.join(CHECK_LIMITS)}")
    parser.add_argument("--timeout-per-check", type=float, default=None, help="seconds; overrides each check's own")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (420; 300 dry)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is None:
        sys.exit(parent_main(args))
    names = args.child.split(",")
    if any(n not in CHECKS for n in names):
        parser.error(f"--child {args.child!r}: choose from {', '.join(CHECKS)}")
    sys.exit(child_main(names, args.dry_run))


if __name__ == "__main__":
    main()
