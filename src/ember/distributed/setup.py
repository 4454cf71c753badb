"""Setting a distributed run up and tearing it down, as Ignite's ``idist`` does: what this install
supports, :func:`initialize` / :func:`finalize` of a process group in this process, and
:func:`show_config` (starting processes is :mod:`ember.distributed.parallel`).

Ember reads ``torch.distributed`` directly on every call, so a process group made by hand is seen
at once and :func:`sync` has nothing to do. XLA and Horovod are not supported.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import torch
import torch.distributed as dist

from ember.distributed import comms
from ember.distributed.cluster import free_port

#: whether torch.distributed is there (the backends Ember runs on)
has_native_dist_support: bool = dist.is_available()
#: Ember has no XLA (TPU) or Horovod support: code that checks these takes its native path
has_xla_support = False
has_hvd_support = False

_env_backup: list[dict[str, str]] = []  # the environment before initialize(), put back by finalize()


def available_backends() -> tuple[str, ...]:
    """The process-group backends this install can use (of ``nccl``, ``gloo``, ``mpi``)."""
    if not has_native_dist_support:
        return ()
    return tuple(name for name in ("nccl", "gloo", "mpi") if getattr(dist, f"is_{name}_available")())


def model_name() -> str:
    """``"native-dist"`` inside a ``torch.distributed`` process group, else ``"serial"`` (Ignite's names)."""
    return "native-dist" if comms.is_initialized() else "serial"


def hostname() -> str:
    """This machine's host name."""
    return socket.gethostname()


def sync(temporary: bool = False) -> None:
    """Ignite's way to notice a process group made by hand; Ember always sees it (nothing to do)."""


def check_backend(backend: str) -> None:
    if backend not in available_backends():
        raise ValueError(f"backend={backend!r} is not available here; choose one of {available_backends()}")


def initialize(backend: str, **kwargs: Any) -> None:
    """Join (or make) the process group of this process with ``backend``, as Ignite's ``initialize``.

    Under torchrun (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` set) it joins that job; otherwise it makes
    a one-process group (rank 0 of 1, on 127.0.0.1). ``kwargs``: ``timeout`` (a ``timedelta``),
    ``init_method`` (``"env://"`` by default, or ``"file://..."``; ``"tcp://"`` is refused: give
    ``MASTER_ADDR``/``MASTER_PORT`` instead), and ``rank``/``world_size`` (both, with an ``init_method``).
    """
    check_backend(backend)
    unknown = set(kwargs) - {"timeout", "init_method", "rank", "world_size"}
    if unknown:
        raise ValueError(f"initialize() got unknown arguments {sorted(unknown)}; allowed: timeout, init_method, rank, world_size")
    if comms.is_initialized():
        raise ValueError("a default process group is already initialized: call finalize() first")
    init_method, rank, world_size = kwargs.get("init_method"), kwargs.get("rank"), kwargs.get("world_size")
    if init_method is None and (rank is not None or world_size is not None):
        raise ValueError("rank and world_size need an init_method (without one they come from the environment)")
    if init_method is not None and (rank is None) != (world_size is None):
        raise ValueError(f"give both rank and world_size, or neither; got rank={rank}, world_size={world_size}")
    if init_method is not None and init_method.startswith("tcp://"):
        raise ValueError(
            f"init_method={init_method!r}: TCP initialization would hang; set MASTER_ADDR and MASTER_PORT and use 'env://'"
        )
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("backend='nccl' needs CUDA devices, and there are none")
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    present = [n for n in names if n in os.environ]
    if present and len(present) != len(names):
        raise RuntimeError(f"the environment sets {present} but not all of {list(names)}")
    _env_backup[:] = [dict(os.environ)]
    os.environ.setdefault("RANK", str(rank if rank is not None else 0))
    os.environ.setdefault("WORLD_SIZE", str(world_size if world_size is not None else 1))
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port(os.environ["MASTER_ADDR"])))
    options: dict[str, Any] = {}
    if kwargs.get("timeout") is not None:
        options["timeout"] = kwargs["timeout"]
    init_method = init_method or "env://"
    if "env" not in init_method:
        options["world_size"], options["rank"] = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    dist.init_process_group(backend, init_method=init_method, **options)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.barrier()


def finalize() -> None:
    """Leave the process group :func:`initialize` (or anything else) made, and put the environment
    variables initialize() set back as they were."""
    comms.shutdown()
    if _env_backup:
        os.environ.clear()
        os.environ.update(_env_backup.pop())


def show_config() -> None:
    """Log where this process sits (backend, device, ranks, sizes) at INFO level, to stderr (as
    Ignite, through a handler of its own when the ``ember.distributed`` logger has none)."""
    logger = logging.getLogger("ember.distributed")
    if not logger.handlers:
        handler: logging.Handler = logging.StreamHandler() if comms.get_rank() == 0 else logging.NullHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    for name, value in (
        ("distributed configuration", model_name()),
        ("backend", comms.backend()),
        ("device", comms.device().type),
        ("hostname", hostname()),
        ("world size", comms.get_world_size()),
        ("rank", comms.get_rank()),
        ("local rank", comms.get_local_rank()),
        ("num processes per_node", comms.get_nproc_per_node()),
        ("num nodes", comms.get_nnodes()),
        ("node rank", comms.get_node_rank()),
    ):
        logger.info(f"{name}: {value}")

