"""The ``Logger`` protocol every experiment logger implements, and what loggers share.

A logger is used at both levels:

- by the Trainer (Lightning's protocol): ``log_metrics(metrics, step)`` at every flush,
  ``log_hyperparams(params)`` once per fit, ``save()`` at epoch ends, ``finalize(status)`` at the end;
- on an Engine (Ignite's protocol): ``attach_output_handler(engine, event, tag, ...)``,
  ``attach_opt_params_handler(engine, event, optimizer)``, ``attach(engine, handler, event)`` and
  ``close()``; the handlers run at ``Priority.LOGGER``, after metrics and user handlers.

Only rank zero writes: every method that writes checks the process rank itself, so a logger may be
built and called on every process.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ember.engine.events import EventsList, Priority


def global_rank() -> int:
    """This process's rank: from ``torch.distributed`` once initialised, else the ``RANK`` variable."""
    if _dist_initialized():
        return torch.distributed.get_rank()
    global _env_rank
    if _env_rank is None:
        try:
            _env_rank = int(os.environ.get("RANK", "0"))
        except ValueError:
            _env_rank = 0
    return _env_rank


_env_rank: int | None = None  # read once: launchers set RANK before the process starts
_dist_initialized = torch.distributed.is_initialized if torch.distributed.is_available() else (lambda: False)


def is_rank_zero() -> bool:
    return global_rank() == 0


class DummyExperiment:
    """What ``experiment`` is on ranks other than zero: every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return _nothing

    def __bool__(self) -> bool:
        return False


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class Logger:
    """Receives metrics with the step they belong to; written by rank zero only.

    ``log_metrics`` gets plain numbers or 0-d tensors (on any device) when ``accepts_tensors`` is
    true: such a logger moves the values to the host itself, in batches, when it writes them, so
    logging never forces a host-device synchronisation per step. Loggers with
    ``accepts_tensors = False`` (the default for third-party subclasses) get Python floats.
    """

    #: whether ``log_metrics`` may receive 0-d tensors (converted to floats when written)
    accepts_tensors: bool = False

    @property
    def name(self) -> str:
        """The experiment's name: the folder under ``save_dir`` that holds its versions."""
        raise NotImplementedError

    @property
    def version(self) -> int | str:
        """This run's version: an int gives the folder ``version_<n>``, a str is the folder's name."""
        raise NotImplementedError

    @property
    def save_dir(self) -> str | None:
        """The root directory this logger writes under (None when it writes elsewhere)."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The directory of this run's files (checkpoints go under it by default)."""
        return None

    @property
    def experiment(self) -> Any:
        """The underlying client (a writer, a run), for what Ember does not wrap."""
        return None

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` (name -> number or 0-d tensor) at ``step``; the Trainer calls it with
        the rows ``self.log`` produced (see the logging page for the steps)."""
        raise NotImplementedError

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (the module's ``hparams``, once at the start of fit)."""
        return None

    def save(self) -> None:
        """Make everything logged so far durable (called at epoch end and on exit)."""

    def finalize(self, status: str) -> None:
        """Close the run; ``status`` is "success", "failed" or "interrupted"."""
        self.save()

    def state_dict(self) -> dict[str, Any]:
        """Plain values that let a resumed run continue this run's log (see ``load_state_dict``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`state_dict` saved in a checkpoint (on resume); nothing by default."""
        return None

    # ------------------------------------------------------------------ Engine level (Ignite's API)

    def attach(self, engine: Any, log_handler: Callable, event_name: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``log_handler(engine, self, event_name, *args, **kwargs)`` on ``event_name``.

        ``event_name`` may be filtered (``Events.ITERATION_COMPLETED(every=10)``) or a ``|`` list;
        the handler runs at ``Priority.LOGGER``. Returns a handle whose ``remove()`` detaches it.
        """
        if not callable(log_handler):
            raise TypeError(f"log_handler must be callable, got {log_handler!r}")
        events = list(event_name) if isinstance(event_name, EventsList) else [event_name]
        handles = [
            engine.add_event_handler(event, log_handler, self, event, *args, priority=Priority.LOGGER, **kwargs)
            for event in events
        ]
        return handles[0] if len(handles) == 1 else _HandleGroup(handles)

    def attach_output_handler(
        self,
        engine: Any,
        event_name: Any,
        tag: str,
        metric_names: str | list[str] | None = None,
        output_transform: Callable | None = None,
        global_step_transform: Callable | None = None,
        state_attributes: list[str] | None = None,
    ) -> Any:
        """Log ``engine.state.metrics`` (``metric_names``: a list or "all"), what
        ``output_transform(engine.state.output)`` returns (a number or a dict) and state attributes,
        as ``"<tag>/<name>"``, at the engine's iteration or epoch (or ``global_step_transform(engine,
        event_name)``). Example::

            tb.attach_output_handler(trainer, Events.ITERATION_COMPLETED, tag="training",
                                     output_transform=lambda loss: {"loss": loss})
        """
        from ember.loggers.handlers import OutputHandler

        handler = OutputHandler(tag, metric_names, output_transform, global_step_transform, state_attributes)
        return self.attach(engine, handler, event_name)

    def attach_opt_params_handler(
        self, engine: Any, event_name: Any, optimizer: Any, param_name: str = "lr", tag: str | None = None
    ) -> Any:
        """Log ``param_name`` of every parameter group of ``optimizer`` as ``"[<tag>/]<param_name>/group_<i>"``."""
        from ember.loggers.handlers import OptimizerParamsHandler

        return self.attach(engine, OptimizerParamsHandler(optimizer, param_name, tag), event_name)

    def close(self) -> None:
        """Ignite's name for ending the run: ``finalize("success")``."""
        self.finalize("success")

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finalize("success" if exc_type is None else "failed")


class _HandleGroup:
    """The handles of one handler attached to several events; ``remove()`` detaches all."""

    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self) -> _HandleGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def next_version(root: str | os.PathLike) -> int:
    """The first unused N among ``root/version_N`` directories."""
    root = Path(root)
    used = [int(m.group(1)) for p in root.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(used) + 1 if used else 0


_VERSION_DIR = re.compile(r"version_(\d+)")


class VersionedRun:
    """What loggers writing to ``<root_dir>/version_N`` (CSV, TensorBoard) do when a run is resumed
    from a checkpoint: continue the run folder the checkpoint lies in (see :meth:`continue_run`).

    The class using it provides ``root_dir``, ``version``, ``_version``, ``_version_given`` and
    ``_switch_version(version)``."""

    root_dir: str
    version: int | str
    _version: int | str | None
    _version_given: bool

    def _switch_version(self, version: int | str) -> None:
        raise NotImplementedError

    def continue_run(self, path: str | os.PathLike) -> bool:
        """A fit resumes from the checkpoint at ``path``: if it lies in one of this logger's
        ``version_N`` folders and no version was given to this logger, write to that folder from now
        on (the version is then fixed, as if given). Returns whether ``path`` lies in this logger's
        current run folder: then the run continues there, and the checkpoint's logger state (the
        last step written) is applied by ``load_state_dict``."""
        folder = _folder_under(self.root_dir, path)
        if folder is None:
            return False
        match = _VERSION_DIR.fullmatch(folder)
        if match is not None and not self._version_given:
            version = int(match.group(1))
            if version != self._version:
                self._switch_version(version)
            self._version_given = True
        return folder == version_dir(self.version)

    def last_run_dir(self) -> str | None:
        """For ``ckpt_path="last"``: the newest ``version_N`` folder of this logger whose
        ``checkpoints`` folder holds a ``*.ckpt`` (None when this logger's version was given, or
        none does)."""
        if self._version_given:
            return None
        root = Path(self.root_dir)
        found = []
        for p in root.glob("version_*"):
            match = _VERSION_DIR.fullmatch(p.name)
            if match is not None and _holds_checkpoint(p / "checkpoints"):
                found.append(int(match.group(1)))
        return str(root / version_dir(max(found))) if found else None


def _folder_under(root: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """The name of the folder directly under ``root`` that ``path`` lies in (None: not under it)."""
    try:
        parts = Path(path).resolve().relative_to(Path(root).resolve()).parts
    except (ValueError, OSError):
        return None
    return parts[0] if len(parts) > 1 or (parts and Path(path).resolve().is_dir()) else None


def _holds_checkpoint(directory: Path) -> bool:
    try:
        return any(e.name.endswith(".ckpt") and not e.name.startswith(".") for e in os.scandir(directory))
    except OSError:
        return False


def check_path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r}")
    return Path(value)


def check_dir_name(name: str, value: Any, allow_empty: bool = False) -> str:
    if value is None and allow_empty:  # Lightning's name=None: no experiment folder
        return ""
    if not isinstance(value, str) or (not value and not allow_empty) or "/" in value or os.sep in value:
        raise ValueError(
            f"{name} must be a {'' if allow_empty else 'non-empty '}directory name without separators, got {value!r}"
        )
    return value


def check_version(value: Any) -> int | str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    if isinstance(value, str) and value and "/" not in value and os.sep not in value:
        return value
    raise ValueError(f"version must be None (the next free one), an int >= 0 or a directory name, got {value!r}")


def version_dir(version: int | str) -> str:
    return version if isinstance(version, str) else f"version_{version}"


def flatten_params(params: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Nested mappings (and argparse Namespaces) flattened to ``"a/b"`` keys."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
            value = vars(value)
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", params)
    return out


def plain_param(value: Any) -> int | float | str | bool:
    """A hyperparameter as a value every tracker can store: numbers, bools and strings as they
    are, 0-d tensors as numbers, everything else as its ``str``."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def yaml_safe(value: Any) -> Any:
    """``value`` with nested dicts and lists kept and every leaf made a plain value (or None)."""
    if isinstance(value, Mapping):
        return {str(k): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [yaml_safe(v) for v in value]
    return None if value is None else plain_param(value)


def check_params(params: Any) -> Mapping[str, Any]:
    if hasattr(params, "__dict__") and type(params).__name__ == "Namespace":
        params = vars(params)
    if not isinstance(params, Mapping):
        raise TypeError(f"log_hyperparams: params must be a dict, got {type(params).__name__}")
    return params


def check_step(step: Any) -> int:
    if type(step) is int:
        return step
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"log_metrics: step must be an int, got {step!r}")
    return int(step)


def scalar_row(metrics: Mapping[str, Any], names: dict[str, str], rename: Callable[[str], str]) -> dict[str, Any]:
    """``metrics`` under their logged names (``names`` caches ``rename``), checked to be numbers or
    scalar tensors. Values of CPU tensors are read now: that is no host-device synchronisation, and
    a queue of plain floats is invisible to Python's garbage collector, whereas thousands of queued
    tensor objects each promoted to its oldest generation trigger full collections (hundreds of
    milliseconds in a process that has imported torch). Tensors on a device are kept as they are,
    to be moved to the host when written."""
    row = {}
    tensor = torch.Tensor
    for key, value in metrics.items():
        if isinstance(value, tensor):
            if value.is_cpu:
                if value.numel() != 1:
                    raise ValueError(
                        f"log_metrics: {key!r} must be a scalar, got a tensor of shape {tuple(value.shape)}"
                    )
                value = value.item()
        elif not isinstance(value, (float, int)) and not isinstance(value, numbers.Real):
            raise TypeError(f"log_metrics: {key!r} must be a number or a scalar tensor, got {type(value).__name__}")
        name = names.get(key)
        if name is None:
            name = names[key] = rename(key)
        row[name] = value
    return row
