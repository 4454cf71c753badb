"""The learning-rate range test (Smith 2015; fastai's and Lightning's ``lr_find``).

Train for up to ``num_training`` optimizer steps while the learning rate grows from ``min_lr`` to
``max_lr`` (exponentially or linearly), record the loss, stop early once the running (exponentially
smoothed) loss exceeds ``early_stop_threshold`` times its best, and suggest the learning rate where
the smoothed loss falls fastest. The suggestion uses a centred moving average over about a quarter
of the points: unlike a running average it does not lag behind the learning rate, and it keeps
batch-to-batch noise from deciding where the "steepest" point is. The model, its optimizer and the
random number generators are put back exactly as they were before the sweep.
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.tune.snapshot import Snapshot

MODES = ("exponential", "linear")
_MISSING = object()
_BETA = 0.98  # the running loss for the divergence test (an exponential moving average, bias-corrected)


class LRFinder:
    """What a sweep found: ``results["lr"]``, ``results["raw_loss"]`` and ``results["loss"]``
    (smoothed, see the module docs) per optimizer step, :meth:`suggestion` and :meth:`plot`."""

    def __init__(self, mode: str, min_lr: float, max_lr: float, num_training: int) -> None:
        self.mode, self.min_lr, self.max_lr, self.num_training = mode, min_lr, max_lr, num_training
        self.results: dict[str, list[float]] = {"lr": [], "loss": [], "raw_loss": []}
        self.stopped_early = False

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) in the sweep."""
        t = step / (self.num_training - 1)
        if self.mode == "exponential":
            return self.min_lr * (self.max_lr / self.min_lr) ** t
        return self.min_lr + (self.max_lr - self.min_lr) * t

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the smoothed loss falls fastest (its steepest negative slope
        against log10(lr), or lr in linear mode), ignoring the first ``skip_begin`` and last
        ``skip_end`` points; None (with a warning) when too few finite points remain."""
        index = self._suggestion_index(skip_begin, skip_end)
        return None if index is None else self.results["lr"][index]

    def _suggestion_index(self, skip_begin: int, skip_end: int) -> int | None:
        import numpy as np

        lrs = np.asarray(self.results["lr"], dtype=np.float64)
        losses = np.asarray(self.results["loss"], dtype=np.float64)
        keep = np.zeros(len(lrs), dtype=bool)
        keep[skip_begin : len(lrs) - skip_end] = True
        keep &= np.isfinite(losses)
        idx = np.flatnonzero(keep)
        if len(idx) < 2:
            warnings.warn(
                f"lr_find: {len(idx)} usable points after skipping {skip_begin} + {skip_end}; no suggestion "
                "(raise num_training, lower skip_begin, or widen min_lr..max_lr)",
                stacklevel=3,
            )
            return None
        x = np.log10(lrs[idx]) if self.mode == "exponential" else lrs[idx]
        return int(idx[int(np.argmin(np.gradient(losses[idx], x)))])

    def plot(
        self, path: str | os.PathLike | None = None, suggest: bool = True, skip_begin: int = 10, skip_end: int = 1
    ) -> Any:
        """A matplotlib ``Figure`` of loss against learning rate (the suggestion marked); with
        ``path``, also written there as a PNG."""
        try:
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError('LRFinder.plot needs matplotlib: pip install "ember[tune]"') from err
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.subplots()
        lrs, losses = self.results["lr"], self.results["loss"]
        ax.plot(lrs, self.results["raw_loss"], color="0.8", linewidth=1, label="loss")
        ax.plot(lrs, losses, color="C0", label="smoothed loss")
        if suggest and len(lrs) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                index = self._suggestion_index(skip_begin, skip_end)
            if index is not None:
                ax.plot(
                    [lrs[index]], [losses[index]], "o", color="C3", markersize=8, label=f"suggested lr {lrs[index]:.3g}"
                )
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        smooth = [v for v in losses if math.isfinite(v)]
        if smooth:  # scaled to the smoothed curve: a diverging raw loss would flatten everything else
            low = min(smooth + [v for v in self.results["raw_loss"] if math.isfinite(v)])
            high = max(smooth)
            pad = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
            ax.set_ylim(low - pad, high + pad)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        if path is not None:
            from ember.io.atomic import atomic_write_bytes

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
            atomic_write_bytes(path, buffer.getvalue())
        return fig


def smooth_losses(losses: list[float], fraction: float = 0.25) -> list[float]:
    """Centred moving average over ``fraction`` of the points (fewer at the ends); non-finite
    values are left out of every average and stay NaN themselves."""
    import numpy as np

    raw = np.asarray(losses, dtype=np.float64)
    n = len(raw)
    if n == 0:
        return []
    half = max(1, int(n * fraction) // 2)
    finite = np.isfinite(raw)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, raw, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    i = np.arange(n)
    lo, hi = np.maximum(0, i - half), np.minimum(n, i + half + 1)
    out = (sums[hi] - sums[lo]) / np.maximum(counts[hi] - counts[lo], 1)
    out[~finite] = np.nan
    return out.tolist()


class SweepProgress:
    """An ``lr_find`` sweep's progress on ``file`` (stderr): a bar on a terminal; elsewhere (a log
    file, CI) one line per tenth of the sweep, so a log gets at most a dozen lines."""

    def __init__(self, total: int, file: Any = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.total = total
        self.every = max(1, total // 10)
        self.bar: Any = None
        if getattr(self.file, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="lr_find", file=self.file, leave=False, dynamic_ncols=True, unit="step")

    def update(self, step: int, lr: float, loss: float) -> None:
        """Optimizer step ``step`` (1-based) ran at ``lr`` with ``loss``."""
        if self.bar is not None:
            self.bar.set_postfix(lr=f"{lr:.3g}", loss=f"{loss:.4g}", refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.every == 0 or step == self.total:
            print(f"lr_find: step {step}/{self.total}  lr={lr:.3g}  loss={loss:.4g}", file=self.file, flush=True)

    def close(self, steps: int, stopped_early: bool) -> None:
        """The sweep ended after ``steps`` steps."""
        if self.bar is not None:
            self.bar.close()
        reason = "the loss diverged" if stopped_early else "done"
        print(f"lr_find: {steps} of {self.total} steps ({reason})", file=self.file, flush=True)


class _Sweep(Callback):
    """Sets each optimizer step's learning rate, records the loss and stops on divergence."""

    def __init__(self, finder: LRFinder, early_stop_threshold: float | None, progress: SweepProgress | None = None) -> None:
        self.finder = finder
        self.threshold = early_stop_threshold
        self.progress = progress
        self.best = math.inf
        self._avg = 0.0
        self._pending: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        lr = self.finder.lr_at(len(self.finder.results["lr"]))
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.finder.results["lr"].append(lr)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            self._pending.append(loss.detach())
        results = self.finder.results
        if len(results["lr"]) <= len(results["raw_loss"]) or not self._pending:
            return  # no optimizer step yet in this accumulation window
        raw = float(torch.stack([t.float() for t in self._pending]).mean())  # one host transfer per step
        self._pending = []
        step = len(results["raw_loss"])
        self._avg = _BETA * self._avg + (1 - _BETA) * raw
        smoothed = self._avg / (1 - _BETA ** (step + 1))
        results["raw_loss"].append(raw)
        if self.progress is not None:
            self.progress.update(step + 1, results["lr"][step], raw)
        if not math.isfinite(raw):
            self._stop(trainer)
            return
        if self.threshold is not None and step > 0 and smoothed > self.threshold * self.best:
            self._stop(trainer)
        self.best = min(self.best, smoothed)

    def _stop(self, trainer: Any) -> None:
        self.finder.stopped_early = True
        trainer.should_stop = True


def lr_find(
    trainer: Any,
    model: torch.nn.Module,
    train_dataloaders: Any = None,
    datamodule: Any = None,
    min_lr: float = 1e-8,
    max_lr: float = 1.0,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    update_attr: bool = False,
    attr_name: str = "",
    progress: bool = False,
) -> LRFinder:
    """Run the learning-rate range test for ``model`` with ``trainer``'s device, precision,
    gradient accumulation and clipping (see the module docs); returns an :class:`LRFinder`.

    The sweep runs on a private Trainer (no loggers, callbacks, checkpoints or validation) and the
    model's first optimizer from ``configure_optimizers`` (its schedulers are not used). Afterwards
    the model's parameters, buffers, gradients and train/eval modes, the optimizers and schedulers
    ``trainer`` holds, and the torch/Python/NumPy random states are exactly as before.
    ``update_attr=True`` sets the suggestion on the model (``attr_name``, else ``lr`` or
    ``learning_rate``, as an attribute or in ``model.hparams``). ``progress=True`` shows the sweep's
    progress on stderr (:class:`SweepProgress`).

    Example::

        finder = ember.tune.lr_find(trainer, model, datamodule=data)
        finder.plot("lr.png")
        model.hparams.lr = finder.suggestion()
    """
    from ember.trainer import Trainer

    if not isinstance(trainer, Trainer):
        raise TypeError(f"trainer must be an ember.Trainer, got {type(trainer).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. an ember.Module), got {type(model).__name__}")
    check_sweep_args(min_lr, max_lr, num_training, mode, early_stop_threshold)
    if trainer.world_size > 1:
        raise ValueError("lr_find runs in one process; run it before launching distributed training")
    finder = LRFinder(mode, float(min_lr), float(max_lr), num_training)
    device = trainer.root_device
    sweeper = _Sweep(finder, early_stop_threshold, SweepProgress(num_training) if progress else None)
    sweep = Trainer(
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else "auto",
        precision=trainer.precision,
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        gradient_clip_val=trainer.gradient_clip_val,
        gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        inference_mode=trainer.inference_mode,
        default_root_dir=trainer.default_root_dir,
        max_epochs=None,
        max_steps=num_training,
        limit_train_batches=trainer.limits["train"],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[sweeper],
    )
    snapshot = Snapshot(model, trainer, datamodule)
    original = model.configure_optimizers

    def first_optimizer_only() -> Any:
        from ember.trainer.optimization import parse_optimizers

        optimizers, _ = parse_optimizers(original())
        if len(optimizers) != 1:
            raise ValueError(f"lr_find needs configure_optimizers() to return one optimizer, got {len(optimizers)}")
        snapshot.add_optimizer(optimizers[0])
        return optimizers[0]

    own = vars(model).get("configure_optimizers", _MISSING)  # an instance attribute of the user's, if any
    object.__setattr__(model, "configure_optimizers", first_optimizer_only)  # for this sweep only
    try:
        sweep.fit(model, train_dataloaders=train_dataloaders, datamodule=datamodule)
    finally:
        if own is _MISSING:
            object.__delattr__(model, "configure_optimizers")
        else:
            object.__setattr__(model, "configure_optimizers", own)
        snapshot.restore()
        if sweeper.progress is not None:
            sweeper.progress.close(len(finder.results["raw_loss"]), finder.stopped_early)
    results = finder.results
    del results["lr"][len(results["raw_loss"]) :]  # a step whose training_step returned no loss tensor
    if not results["raw_loss"]:
        warnings.warn("lr_find recorded no loss: training_step returned no loss tensor", stacklevel=2)
    results["loss"] = smooth_losses(results["raw_loss"])
    if update_attr:
        suggested = finder.suggestion()
        if suggested is not None:
            _set_lr(model, suggested, attr_name)
    return finder


def check_sweep_args(min_lr: Any, max_lr: Any, num_training: Any, mode: Any, threshold: Any) -> None:
    """The sweep's arguments, checked: an error names the argument, its value and what is allowed."""
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive number")
    if min_lr >= max_lr:
        raise ValueError(f"min_lr={min_lr!r} must be below max_lr={max_lr!r}")
    if isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 2:
        raise ValueError(f"num_training={num_training!r} must be an integer >= 2 (optimizer steps in the sweep)")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose 'exponential' or 'linear'")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 1
    ):
        raise ValueError(f"early_stop_threshold={threshold!r} must be a number > 1, or None to never stop early")


def _set_lr(model: Any, lr: float, attr_name: str) -> None:
    names = [attr_name] if attr_name else ["lr", "learning_rate"]
    hparams = getattr(model, "hparams", None)
    for name in names:
        if hasattr(model, name) and not callable(getattr(model, name)):
            setattr(model, name, lr)
            return
        if isinstance(hparams, Mapping) and name in hparams:
            hparams[name] = lr
            return
    raise AttributeError(
        f"update_attr=True, but {type(model).__name__} has no {' or '.join(map(repr, names))} attribute or hparams entry "
        "to set; pass attr_name=..., or update_attr=False and use finder.suggestion()"
    )


class Tuner:
    """Lightning's ``Tuner(trainer)``: tuning helpers bound to a Trainer.

    Example::

        finder = Tuner(trainer).lr_find(model, datamodule=data)   # sets model.lr / hparams.lr
        trainer.fit(model, datamodule=data)
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def lr_find(
        self,
        model: torch.nn.Module,
        train_dataloaders: Any = None,
        datamodule: Any = None,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> LRFinder:
        """:func:`lr_find` with this trainer; as in Lightning, ``update_attr`` defaults to True."""
        return lr_find(
            self.trainer,
            model,
            train_dataloaders=train_dataloaders,
            datamodule=datamodule,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=update_attr,
            attr_name=attr_name,
        )
