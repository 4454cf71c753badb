"""Where this process sits in a distributed run, and the collectives, as Ignite's ``idist`` has them.

Every function works with and without a process group: outside one, ranks are 0, the world size
is 1 and the collectives return their input, so the same code runs in one process or in many.
Python numbers, strings and other picklable objects are accepted next to tensors.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

_DRAIN_S = 0.1  # see shutdown()
_OPS = {"SUM": "SUM", "PRODUCT": "PRODUCT", "MIN": "MIN", "MAX": "MAX", "AND": "BAND", "OR": "BOR"}
_local_rank_hint: list[int] = []  # set_local_rank(), for process groups made by hand without LOCAL_RANK


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


def set_local_rank(index: int) -> None:
    """Tell which local rank this process has, for a process group made by hand in an environment
    without ``LOCAL_RANK`` (as Ignite's ``idist.set_local_rank``)."""
    _local_rank_hint[:] = [int(index)]


def get_local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, set by every launcher, else what
    :func:`set_local_rank` said; 0 outside a process group)."""
    if not is_initialized():
        return 0
    return _env_int("LOCAL_RANK", _local_rank_hint[0] if _local_rank_hint else 0)


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
    """Where this process computes: ``cuda:<current>`` under NCCL, the CPU under another backend
    (collectives run there); outside a process group, as Ignite, CUDA (or MPS) when present."""
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if not is_initialized():
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
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


def _group(group: Any) -> Any:
    """A process group from ``group`` (None: the default one; a list of ranks: a new group of them)."""
    if isinstance(group, list) and all(isinstance(r, int) for r in group):
        return new_group(group)
    return group


def _outside(group: Any) -> bool:
    """Whether this process is not a member of ``group``."""
    return group is not None and is_initialized() and dist.get_rank(group) < 0


def all_reduce(tensor: Any, op: str = "SUM", group: Any = None) -> Any:
    """``tensor`` (a tensor or a number) reduced over all processes (of ``group``: a process group
    or a list of ranks) with ``op`` ("SUM", "PRODUCT", "MIN", "MAX", "AND", "OR"). A tensor is
    reduced in place when it is on the collective device; the result is returned either way."""
    reduce_op = _op(op)
    if get_world_size() == 1:
        return tensor
    group = _group(group)
    if _outside(group):
        return tensor
    value, back = _as_tensor(tensor)
    dist.all_reduce(value, reduce_op, group=group)
    return back(value)


def all_gather(tensor: Any, group: Any = None) -> Any:
    """Every process's ``tensor``: tensors are concatenated along the first dimension (0-d tensors
    stacked); numbers, strings and other picklable objects come back as a list indexed by rank.
    Outside a process group a tensor comes back as it is, anything else as ``[tensor]`` (as Ignite)."""
    if not is_initialized():
        return tensor if isinstance(tensor, torch.Tensor) else [tensor]
    group = _group(group)
    if _outside(group):
        return tensor
    world = dist.get_world_size(group)
    if isinstance(tensor, torch.Tensor):
        value, back = _as_tensor(tensor)
        parts = [torch.empty_like(value) for _ in range(world)]
        dist.all_gather(parts, value.contiguous(), group=group)
        return back(torch.stack(parts) if value.ndim == 0 else torch.cat(parts))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, tensor, group=group)
    return gathered


def all_gather_tensors_with_shapes(tensor: torch.Tensor, shapes: Sequence[Sequence[int]], group: Any = None) -> list[torch.Tensor]:
    """Every process's ``tensor`` when their shapes differ (``shapes[r]`` is rank r's; all have the
    same number of dimensions): a list of tensors indexed by rank."""
    if get_world_size() == 1:
        return [tensor]
    group = _group(group)
    if _outside(group):
        return [tensor]
    largest = torch.tensor(shapes).amax(dim=0).tolist()
    padding: list[int] = []
    for have, want in zip(reversed(tensor.shape), reversed(largest)):
        padding += [0, want - have]
    gathered = all_gather(torch.nn.functional.pad(tensor, padding), group=group)
    rows = largest[0]  # rank r's padded tensor holds rows r * rows ... (r + 1) * rows - 1
    out = []
    for r, shape in enumerate(shapes):
        index = tuple(slice(r * rows, r * rows + n) if d == 0 else slice(0, n) for d, n in enumerate(shape))
        out.append(gathered[index])
    return out


def broadcast(tensor: Any, src: int = 0, safe_mode: bool = False) -> Any:
    """The ``src`` process's ``tensor`` (a tensor, number, string, path or any picklable object) on
    every process. A tensor must have the same shape and dtype everywhere unless ``safe_mode=True``,
    with which the other ranks may pass ``None``; objects may be ``None`` on the other ranks anyway."""
    if get_world_size() == 1:
        if tensor is None:
            raise ValueError("broadcast() got None on the source rank: there is nothing to broadcast")
        return tensor
    rank = get_rank()
    if tensor is None and rank == src:
        raise ValueError(f"broadcast() got None on the source rank {src}: there is nothing to broadcast")
    if safe_mode:  # the source tells what it sends, so the others need no placeholder
        meta = [(tuple(tensor.shape), tensor.dtype) if isinstance(tensor, torch.Tensor) else None]
        dist.broadcast_object_list(meta, src)
        if meta[0] is not None and rank != src:
            shape, dtype = meta[0]
            tensor = torch.empty(shape, dtype=dtype, device=device())
        elif meta[0] is None and isinstance(tensor, torch.Tensor):
            tensor = None
    if isinstance(tensor, torch.Tensor):
        value, back = _as_tensor(tensor)
        dist.broadcast(value, src)
        return back(value)
    box = [tensor]
    dist.broadcast_object_list(box, src)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (a no-op outside a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def new_group(ranks: list[int], **kwargs: Any) -> Any:
    """A process group of ``ranks`` (``kwargs`` go to ``torch.distributed.new_group``); outside a
    process group, the list itself (as Ignite)."""
    if not (isinstance(ranks, list) and all(isinstance(r, int) for r in ranks)):
        raise ValueError(f"ranks must be a list of ints, got {ranks!r}")
    if not is_initialized():
        return ranks
    return dist.new_group(ranks=ranks, **kwargs)


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


@contextlib.contextmanager
def one_rank_first(rank: int = 0, local: bool = False) -> Iterator[None]:
    """Context manager: process ``rank`` (the local rank on each machine with ``local=True``) runs
    the block first, the others after it (a dataset download, a cache to build).

    Example::

        with one_rank_first():
            dataset = download_dataset()
    """
    current = get_local_rank() if local else get_rank()
    size = get_nproc_per_node() if local else get_world_size()
    if not 0 <= rank < size:
        raise ValueError(f"rank={rank} must be in [0, {size - 1}]{' (a local rank)' if local else ''}")
    if current != rank:
        barrier()
    yield
    if current == rank:
        barrier()
