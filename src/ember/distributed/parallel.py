"""``Parallel`` and ``spawn``: run a function in every process of a distributed job (Ignite's
``idist.Parallel`` and ``idist.spawn``)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

from ember.distributed.cluster import ClusterEnv, detect_cluster, free_port, rank_env, replace_rank, threads_per_process
from ember.distributed.comms import get_local_rank, shutdown
from ember.distributed.setup import check_backend, finalize, initialize

BACKENDS = ("gloo", "nccl", "mpi")


class Parallel:
    """A context that runs ``fn(local_rank, *args, **kwargs)`` in every process of a job (Ignite's
    ``idist.Parallel``, with the same arguments; ``None`` means "not given", as argparse leaves it).

    - ``nproc_per_node=N``: starts N processes on this machine (``torch.multiprocessing``, "spawn"),
      each joining a process group over ``master_addr:master_port`` (127.0.0.1 and a free port on
      one machine; ``nnodes``/``node_rank`` for several machines, started on each of them), or over
      ``init_method`` (``"env://"``, ``"file://..."``);
    - no ``nproc_per_node``: joins the job of torchrun, SLURM or another launcher in this process,
      or makes a one-process group (see :func:`~ember.distributed.initialize`), and runs ``fn`` here;
    - ``backend=None``: runs ``fn(0, ...)`` here with no process group.

    ``spawn_kwargs``: ``timeout`` (a ``timedelta``) and ``start_method``. Each started process gets
    ``OMP_NUM_THREADS`` = cores / processes unless it is set. If one process raises, the others are
    stopped and ``run`` raises with that process's traceback.

    Example::

        def training(local_rank, config):
            print(ember.distributed.get_rank(), ember.distributed.get_world_size())

        with ember.distributed.Parallel(backend="gloo", nproc_per_node=2) as parallel:
            parallel.run(training, {"lr": 0.1})
    """

    def __init__(
        self,
        backend: str | None = None,
        nproc_per_node: int | None = None,
        nnodes: int | None = None,
        node_rank: int | None = None,
        master_addr: str | None = None,
        master_port: int | None = None,
        init_method: str | None = None,
        **spawn_kwargs: Any,
    ) -> None:
        unknown = set(spawn_kwargs) - {"timeout", "start_method"}
        if unknown:
            raise ValueError(f"Parallel() got unknown arguments {sorted(unknown)}; allowed: timeout, start_method")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not supported; choose one of {BACKENDS} or None")
        if backend is None:
            for name, value in (("nproc_per_node", nproc_per_node), ("nnodes", nnodes), ("node_rank", node_rank),
                                ("master_addr", master_addr), ("master_port", master_port)):  # fmt: skip
                if value is not None:
                    raise ValueError(f"{name}={value!r} needs a backend ('gloo' on CPU, 'nccl' on CUDA)")
        if init_method is not None and init_method.startswith("tcp://"):
            raise ValueError(
                f"init_method={init_method!r}: TCP initialization would hang; give master_addr/master_port "
                "(or MASTER_ADDR/MASTER_PORT and 'env://')"
            )
        for name, value in (("nproc_per_node", nproc_per_node), ("nnodes", nnodes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None")
        nnodes = nnodes or 1
        if nproc_per_node is not None:
            if node_rank is None and nnodes > 1:
                raise ValueError(f"nnodes={nnodes} needs node_rank")
            if nnodes > 1 and (master_addr is None or master_port is None) and init_method is None:
                raise ValueError(f"nnodes={nnodes} needs master_addr and master_port, or init_method")
        if node_rank is not None and not 0 <= node_rank < nnodes:
            raise ValueError(f"node_rank={node_rank!r} must be in [0, {nnodes})")
        self.backend = backend
        self.nproc_per_node = nproc_per_node
        self.nnodes = nnodes
        self.node_rank = node_rank or 0
        self.master_addr = master_addr or "127.0.0.1"
        self.master_port = master_port
        self.init_method = init_method
        self.timeout: datetime.timedelta = spawn_kwargs.get("timeout") or datetime.timedelta(minutes=30)
        self.start_method: str = spawn_kwargs.get("start_method", "spawn")
        self._owns_group = False

    def __enter__(self) -> Parallel:
        if self.backend is not None and self.nproc_per_node is None and not dist.is_initialized():
            cluster = detect_cluster()
            if cluster is not None and self.init_method is None:
                dist.init_process_group(
                    self.backend,
                    init_method=f"tcp://{cluster.master_addr}:{cluster.master_port}",
                    rank=cluster.global_rank,
                    world_size=cluster.world_size,
                    timeout=self.timeout,
                )
            else:
                initialize(self.backend, init_method=self.init_method, timeout=self.timeout)
            self._owns_group = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_group:
            if exc[0] is None:
                finalize()
            else:
                shutdown(destroy=False)
        self._owns_group = False

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(local_rank, *args, **kwargs)`` in every process; in this process, returns what
        it returned (when the processes are started here, returns None)."""
        if self.nproc_per_node is None:
            return fn(get_local_rank(), *args, **kwargs)
        import torch.multiprocessing as mp

        port = self.master_port or free_port(self.master_addr)
        n = self.nproc_per_node
        cluster = ClusterEnv(n * self.nnodes, self.node_rank * n, 0, n, self.node_rank, self.master_addr, port, "env")
        threads = None if "OMP_NUM_THREADS" in os.environ else threads_per_process(n)
        mp.start_processes(
            _worker,
            args=(fn, args, kwargs, cluster, self.backend, self.timeout, threads, self.init_method),
            nprocs=n,
            start_method=self.start_method,
        )
        return None


def spawn(
    backend: str,
    fn: Callable[..., Any],
    args: tuple,
    kwargs_dict: Mapping[str, Any] | None = None,
    nproc_per_node: int = 1,
    **kwargs: Any,
) -> None:
    """Start ``nproc_per_node`` processes that each join a ``backend`` process group and call
    ``fn(local_rank, *args, **kwargs_dict)``, as Ignite's ``spawn``. ``kwargs``: ``nnodes``,
    ``node_rank``, ``master_addr``, ``master_port``, ``init_method``, ``timeout``, ``start_method``."""
    check_backend(backend)
    Parallel(backend=backend, nproc_per_node=nproc_per_node, **kwargs).run(fn, *args, **dict(kwargs_dict or {}))


def _worker(
    local_rank: int,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    cluster: ClusterEnv,
    backend: str,
    timeout: datetime.timedelta,
    threads: int | None,
    init_method: str | None = None,
) -> None:
    me = replace_rank(cluster, local_rank)
    os.environ.update(rank_env(me))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend,
        init_method=init_method or f"tcp://{me.master_addr}:{me.master_port}",
        rank=me.global_rank,
        world_size=me.world_size,
        timeout=timeout,
    )
    try:
        fn(local_rank, *args, **kwargs)
    except BaseException as err:
        err.add_note(f"[ember] raised on global rank {me.global_rank} of {me.world_size} (pid {os.getpid()})")
        shutdown(destroy=False)
        raise
    shutdown()
