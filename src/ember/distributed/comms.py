"""Where this process sits in a distributed run, and the collectives, in the spirit of Ignite's ``idist``.

Every function works with and without a process group: outside one, ranks are 0, the world size
is 1 and the collectives return their input, so the same code runs in one process or in many.
Python numbers, strings and other picklable objects are accepted next to tensors.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

_DRAIN_S = 0.1  # see shutdown()
_OPS = {"SUM": "SUM", "PRODUCT": "PRODUCT", "MIN": "MIN", "MAX": "MAX", "AND": "BAND", "OR": "BOR"}


def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group is up in this process."""
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default


def get_rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """How many processes take part (1 outside a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, set by every launcher; 0 when unset)."""
    return _env_int("LOCAL_RANK", 0) if is_initialized() else 0


def get_nproc_per_node() -> int:
    """Processes per machine (``LOCAL_WORLD_SIZE``; the world size when unset)."""
    return _env_int("LOCAL_WORLD_SIZE", get_world_size()) if is_initialized() else 1


def get_nnodes() -> int:
    """How many machines take part."""
    return max(1, get_world_size() // max(1, get_nproc_per_node()))


def get_node_rank() -> int:
    """This machine's index among the machines of the run."""
    return get_rank() // max(1, get_nproc_per_node())


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"nccl"``), or None outside a process group."""
    return str(dist.get_backend()) if is_initialized() else None


def device() -> torch.device:
    """The device collectives of this process use: ``cuda:<local rank>`` under NCCL, else the CPU."""
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _op(op: str) -> Any:
    name = _OPS.get(op.upper()) if isinstance(op, str) else None
    if name is None:
        raise ValueError(f"op={op!r} is not supported; choose one of {sorted(_OPS)}")
    return getattr(dist.ReduceOp, name)


def _as_tensor(value: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """``value`` as a tensor on the collective device, and how to turn the result back."""
    if isinstance(value, torch.Tensor):
        if value.device != device():
            return value.to(device()), lambda t: t.to(value.device)
        return value, lambda t: t
    if isinstance(value, (bool, int, float)):
        kind = type(value)
        dtype = torch.float64 if kind is float else torch.int64
        return torch.tensor(value, dtype=dtype, device=device()), lambda t: kind(t.item())
    raise TypeError(f"expected a tensor or a number, got {type(value).__name__}")


def all_reduce(value: Any, op: str = "SUM") -> Any:
    """``value`` (a tensor or a number) reduced over all processes with ``op`` ("SUM", "PRODUCT",
    "MIN", "MAX", "AND", "OR"). A tensor is reduced in place when it is on the collective device;
    the result is returned either way."""
    reduce_op = _op(op)
    if get_world_size() == 1:
        return value
    tensor, back = _as_tensor(value)
    dist.all_reduce(tensor, reduce_op)
    return back(tensor)


def all_gather(value: Any) -> Any:
    """Every process's ``value``: tensors are concatenated along the first dimension (0-d tensors
    stacked); numbers, strings and other picklable objects come back as a list indexed by rank."""
    world = get_world_size()
    if isinstance(value, torch.Tensor):
        if world == 1:
            return value.unsqueeze(0) if value.ndim == 0 else value
        tensor, back = _as_tensor(value)
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        out = torch.stack(parts) if tensor.ndim == 0 else torch.cat(parts)
        return back(out)
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast(value: Any, src: int = 0) -> Any:
    """The ``src`` process's ``value`` on every process. A tensor must have the same shape and
    dtype everywhere; anything else picklable may be given as None on the other ranks."""
    if get_world_size() == 1:
        return value
    if isinstance(value, torch.Tensor):
        tensor, back = _as_tensor(value)
        dist.broadcast(tensor, src)
        return back(tensor)
    box = [value]
    dist.broadcast_object_list(box, src)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (a no-op outside a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def shutdown(destroy: bool = True) -> None:
    """End this process's part in the default process group, safely at exit.

    gloo's worker threads free each finished collective a moment after the caller sees it
    complete, and freeing a tensor that Python created takes the GIL: if that happens once the
    interpreter is finalizing, the process aborts ("terminate called without an active
    exception"). Anything still holding the group (a DDP wrapper, an FSDP mesh) keeps those threads
    alive past ``destroy_process_group``, so a short pause lets them finish first. ``destroy=False``
    only pauses (after a failure the peers may be gone or stuck, and tearing down could wait on them).
    """
    if not is_initialized():
        return
    time.sleep(_DRAIN_S)
    if destroy:
        dist.destroy_process_group()


def one_rank_only(rank: int = 0, with_barrier: bool = False) -> Callable:
    """Decorator: run the function on process ``rank`` only (returning None elsewhere), optionally
    followed by a barrier on every process.

    Example::

        @one_rank_only()
        def save(engine): ...
    """

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs) if get_rank() == rank else None
            if with_barrier:
                barrier()
            return out

        return wrapper

    return decorator
