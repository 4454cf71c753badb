"""When ``ModelCheckpoint`` saves, as Lightning 2.6 decides it: its triggers (every N steps, every
N epochs or every so many seconds), whether an epoch's save belongs to the end of the training epoch
or to the end of validation, and when a step- or time-triggered save waits for the next validation
(its monitored metric is logged there).

The callback asks the last two only when a save is due (docs/architecture.md, *Rules for speed*):
nothing here runs on a batch where no save is scheduled.
"""

from __future__ import annotations

from typing import Any


def _non_negative_or_none(name: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name}={value!r} must be a non-negative integer or None")
    return value


def _seconds(interval: Any) -> float | None:
    if interval is None:
        return None
    seconds = interval.total_seconds() if hasattr(interval, "total_seconds") else interval
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"train_time_interval={interval!r} must be a positive timedelta or number of seconds")
    return float(seconds)


def check_triggers(
    every_n_train_steps: Any, every_n_epochs: Any, train_time_interval: Any
) -> tuple[int | None, int | None, float | None]:
    """``ModelCheckpoint``'s save triggers, checked: ``(every_n_train_steps, every_n_epochs,
    train_time_interval in seconds)``. At most one may be set (a 0 turns one off); with none given,
    ``every_n_epochs=1``."""
    steps = _non_negative_or_none("every_n_train_steps", every_n_train_steps)
    epochs = _non_negative_or_none("every_n_epochs", every_n_epochs)
    seconds = _seconds(train_time_interval)
    if sum(1 for t in (steps, epochs, seconds) if t) > 1:
        raise ValueError(
            f"ModelCheckpoint(every_n_train_steps={every_n_train_steps!r}, every_n_epochs={every_n_epochs!r}, "
            f"train_time_interval={train_time_interval!r}): choose one of them, they are mutually exclusive"
        )
    if steps is None and epochs is None and seconds is None:
        epochs = 1
    return steps, epochs, seconds


def _any_batches(counts: list[int | None]) -> bool:
    """Whether loaders with these batch counts yield anything (None: no length, it may)."""
    return any(count is None or count > 0 for count in counts)


def saves_at_train_epoch_end(trainer: Any, setting: bool | None) -> bool:
    """Whether an epoch's scheduled save is made at the end of the training epoch (True) or after
    the validation that logged the monitored metric (False). ``setting`` is the callback's
    ``save_on_train_epoch_end``; unset, as Lightning: at the training epoch end when there is no
    validation, or when it runs once at the end of every epoch."""
    if setting is not None:
        return setting
    if trainer.check_val_every_n_epoch != 1:  # not every epoch validates: wait for the ones that do
        return False
    return not _any_batches(trainer.num_val_batches) or trainer.val_check_interval == 1.0


def validation_follows(trainer: Any, batch_idx: int, setting: bool | None) -> bool:
    """Whether a save due after training batch ``batch_idx`` would use a monitored value that the
    validation run right after it is about to replace: the epoch's last batch, in an epoch that
    validates, when saves wait for validation (Lightning's rule, for automatic optimization).
    Data of unknown length never counts as at its last batch here."""
    if trainer.num_training_batches is None or batch_idx + 1 != trainer.num_training_batches:
        return False
    if saves_at_train_epoch_end(trainer, setting) or not _any_batches(trainer.num_val_batches):
        return False
    every = trainer.check_val_every_n_epoch
    return every is None or (trainer.current_epoch + 1) % every == 0


def missing_monitor_message(monitor: str, metrics: dict[str, Any]) -> str:
    """The warning (before any validation ran) or error (after) for a monitor nobody logged."""
    logged = sorted(name for name in metrics if name not in ("epoch", "step"))
    return (
        f"ModelCheckpoint(monitor={monitor!r}) found no such logged metric; logged metrics are: {logged}. "
        f"Log it with self.log({monitor!r}, value) in the module"
    )
