"""``Parallel``: run a function in every process of a distributed job (Ignite's ``idist.Parallel``)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ember.distributed.cluster import ClusterEnv, detect_cluster, free_port, rank_env, replace_rank, threads_per_process
from ember.distributed.comms import shutdown

BACKENDS = ("gloo", "nccl", "mpi")


class Parallel:
    """A context that runs ``fn(local_rank, *args, **kwargs)`` in every process of a job.

    - ``nproc_per_node=N``: starts N processes on this machine (``torch.multiprocessing``, "spawn"),
      each joining a process group over ``master_addr:master_port`` (127.0.0.1 and a free port on
      one machine; ``nnodes``/``node_rank`` for several machines, started on each of them);
    - no ``nproc_per_node`` under torchrun, SLURM or another launcher: joins that job's group in
      this process and runs ``fn`` here;
    - ``backend=None``: runs ``fn(0, ...)`` here with no process group.

    Each started process gets ``OMP_NUM_THREADS`` = cores / processes unless it is set. If one
    process raises, the others are stopped and ``run`` raises with that process's traceback.

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
        nnodes: int = 1,
        node_rank: int | None = None,
        master_addr: str | None = None,
        master_port: int | None = None,
        timeout: datetime.timedelta = datetime.timedelta(minutes=30),
        start_method: str = "spawn",
    ) -> None:
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not supported; choose one of {BACKENDS} or None")
        if nproc_per_node is not None and (
            isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1
        ):
            raise ValueError(f"nproc_per_node={nproc_per_node!r} must be a positive integer or None")
        if isinstance(nnodes, bool) or not isinstance(nnodes, int) or nnodes < 1:
            raise ValueError(f"nnodes={nnodes!r} must be a positive integer")
        if nproc_per_node is not None and backend is None:
            raise ValueError("nproc_per_node needs a backend ('gloo' on CPU, 'nccl' on CUDA)")
        if nnodes > 1 and (node_rank is None or master_addr is None or master_port is None):
            raise ValueError(f"nnodes={nnodes} needs node_rank, master_addr and master_port")
        if node_rank is not None and not 0 <= node_rank < nnodes:
            raise ValueError(f"node_rank={node_rank!r} must be in [0, {nnodes})")
        self.backend = backend
        self.nproc_per_node = nproc_per_node
        self.nnodes = nnodes
        self.node_rank = node_rank or 0
        self.master_addr = master_addr or "127.0.0.1"
        self.master_port = master_port
        self.timeout = timeout
        self.start_method = start_method
        self._owns_group = False

    def __enter__(self) -> Parallel:
        if self.backend is not None and self.nproc_per_node is None and not dist.is_initialized():
            cluster = detect_cluster()
            if cluster is not None:
                dist.init_process_group(
                    self.backend,
                    init_method=f"tcp://{cluster.master_addr}:{cluster.master_port}",
                    rank=cluster.global_rank,
                    world_size=cluster.world_size,
                    timeout=self.timeout,
                )
                self._owns_group = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_group:
            shutdown(destroy=exc[0] is None)
        self._owns_group = False

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(local_rank, *args, **kwargs)`` in every process; in this process, returns what
        it returned (when the processes are started here, returns None)."""
        if self.nproc_per_node is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0")) if dist.is_initialized() else 0
            return fn(local_rank, *args, **kwargs)
        import torch.multiprocessing as mp

        port = self.master_port or free_port(self.master_addr)
        n = self.nproc_per_node
        cluster = ClusterEnv(n * self.nnodes, self.node_rank * n, 0, n, self.node_rank, self.master_addr, port, "env")
        threads = None if "OMP_NUM_THREADS" in os.environ else threads_per_process(n)
        mp.start_processes(
            _worker,
            args=(fn, args, kwargs, cluster, self.backend, self.timeout, threads),
            nprocs=n,
            start_method=self.start_method,
        )
        return None


def _worker(
    local_rank: int,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    cluster: ClusterEnv,
    backend: str,
    timeout: datetime.timedelta,
    threads: int | None,
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
        init_method=f"tcp://{me.master_addr}:{me.master_port}",
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
