"""Starting the processes of a distributed run, and finding out where this process sits in one.

A run gets its processes in one of three ways:

- **from outside**: ``torchrun``, SLURM's ``srun``, or any launcher that sets the standard variables
  (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``). Every process already
  runs the script; :func:`detect_cluster` reads where this one sits and the Trainer joins the group.
- :class:`ScriptLauncher` (``strategy="ddp"`` from a plain ``python train.py``): this process becomes
  local rank 0 and re-runs the same command for local ranks 1..n-1 with those variables set, as
  Lightning does. If any process fails, the others are stopped and every one exits non-zero.
- :class:`SpawnLauncher` (``strategy="ddp_spawn"``): ``torch.multiprocessing`` starts n fresh
  processes that each get a pickled copy of the Trainer, the model and the data, run the stage,
  and send rank zero's results (weights, metrics, checkpoint paths) back to this process.

Both launchers give each process a sane thread count (``OMP_NUM_THREADS`` = cores / processes,
unless the user set it): ``torch.multiprocessing.spawn`` does not, and n processes that each use
every core run many times slower than one.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from ember.distributed.cluster import (
    ClusterEnv,
    detect_cluster,
    free_port,
    int_env,
    rank_env,
    replace_rank,
    threads_per_process,
)

# how long the other processes get to report their own error after one failed, before they are killed
FAILURE_GRACE_S = 10.0


def _planned_cluster(local_processes: int, num_nodes: int) -> ClusterEnv:
    """Where this process (local rank 0) sits in a run that it is about to start."""
    node_rank = int_env(os.environ, "NODE_RANK", 0)
    if num_nodes > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"num_nodes={num_nodes}: set {', '.join(missing)} on every machine (the same MASTER_ADDR and "
                "MASTER_PORT everywhere, NODE_RANK=0..num_nodes-1), or launch with torchrun/SLURM"
            )
        if not 0 <= node_rank < num_nodes:
            raise ValueError(f"NODE_RANK={node_rank} must be in [0, {num_nodes})")
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int_env(os.environ, "MASTER_PORT") or free_port(addr if addr in ("127.0.0.1", "localhost") else "0.0.0.0")
    return ClusterEnv(
        world_size=local_processes * num_nodes,
        global_rank=node_rank * local_processes,
        local_rank=0,
        local_world_size=local_processes,
        node_rank=node_rank,
        master_addr=addr,
        master_port=port,
        source="env",
    )


def _script_command() -> list[str]:
    """The command that started this process, to run again for the other ranks."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        return [sys.executable, "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    script = getattr(__main__, "__file__", None)
    if not script or not sys.argv or sys.argv[0] in ("-c", ""):
        raise RuntimeError(
            "strategy='ddp' starts the other processes by running this script again, but this Python session "
            "has no script (an interactive session, a notebook or python -c). Use strategy='ddp_spawn', or run a "
            "script (python train.py / torchrun --nproc_per_node=N train.py)"
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


class ScriptLauncher:
    """Makes this process local rank 0 and re-runs its command for local ranks 1..n-1.

    The children are started once per process (a second Trainer finds the variables set and joins
    the same group). A watcher thread ends the job when a child fails: the others are terminated,
    and this process exits non-zero after :data:`FAILURE_GRACE_S` seconds if its own error has not
    ended it by then. At exit this process waits for its children and exits non-zero if one failed.
    """

    _children: list[tuple[int, subprocess.Popen]] = []  # shared: one set of children per process
    failed = False  # a stage failed in this process (see note_failure)
    spawns = False  # the function runs here, as local rank 0

    def __init__(self, local_processes: int, num_nodes: int) -> None:
        self.local_processes = local_processes
        self.num_nodes = num_nodes

    @property
    def started(self) -> bool:
        return bool(ScriptLauncher._children)

    def launch(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Start the other local ranks (first call only), then run ``function`` here as local rank 0."""
        if not self.started and detect_cluster() is None:
            self._start()
        return function(*args, **kwargs)

    def _start(self) -> None:
        cluster = _planned_cluster(self.local_processes, self.num_nodes)
        command = _script_command()
        threads = None if "OMP_NUM_THREADS" in os.environ else threads_per_process(self.local_processes)
        os.environ.update(rank_env(cluster))  # this process is local rank 0 from now on
        for local_rank in range(1, self.local_processes):
            env = dict(os.environ)
            env.update(rank_env(replace_rank(cluster, local_rank)))
            if threads is not None:
                env["OMP_NUM_THREADS"] = str(threads)
            proc = subprocess.Popen(command, env=env)
            ScriptLauncher._children.append((cluster.global_rank + local_rank, proc))
        if threads is not None and torch.get_num_threads() > threads:
            torch.set_num_threads(threads)
        atexit.register(_wait_for_children)
        threading.Thread(target=_watch_children, name="ember-ddp-watch", daemon=True).start()


def _stop_children(grace: float = 5.0) -> None:
    live = [p for _, p in ScriptLauncher._children if p.poll() is None]
    for p in live:
        p.terminate()
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def _watch_children() -> None:
    while True:
        for rank, proc in ScriptLauncher._children:
            code = proc.poll()
            if code is not None and code != 0:
                print(
                    f"ember: rank {rank} (pid {proc.pid}) exited with code {code}; stopping the other processes",
                    file=sys.stderr,
                    flush=True,
                )
                _stop_children()
                time.sleep(FAILURE_GRACE_S)  # let this process report its own error and exit first
                sys.stderr.flush()
                os._exit(1)
        if all(p.poll() is not None for _, p in ScriptLauncher._children):
            return
        time.sleep(0.2)


def note_failure() -> None:
    """A stage failed in this process: at exit, the children it started are stopped rather than
    awaited (one blocked in a collective with this process would wait for the whole timeout)."""
    ScriptLauncher.failed = True


def _wait_for_children() -> None:
    if ScriptLauncher.failed:
        _stop_children(FAILURE_GRACE_S)
    failed = []
    for rank, proc in ScriptLauncher._children:
        code = proc.wait()
        if code != 0:
            failed.append(rank)
    if failed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # a child failed: the job fails even if rank 0 got through


# ---------------------------------------------------------------------- ddp_spawn


class SpawnLauncher:
    """Runs a function in ``local_processes`` fresh processes (``torch.multiprocessing``) and hands
    rank zero's return value back to this process."""

    spawns = True  # the function runs in other processes: its effects must be copied back

    def __init__(self, local_processes: int, num_nodes: int, start_method: str = "spawn") -> None:
        if start_method not in ("spawn", "fork", "forkserver"):
            raise ValueError(f"start_method={start_method!r}; choose 'spawn', 'fork' or 'forkserver'")
        self.local_processes = local_processes
        self.num_nodes = num_nodes
        self.start_method = start_method

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in every process (it and its arguments are pickled);
        returns what it returned on global rank zero."""
        import queue as queue_module

        import torch.multiprocessing as mp

        cluster = _planned_cluster(self.local_processes, self.num_nodes)
        threads = None if "OMP_NUM_THREADS" in os.environ else threads_per_process(self.local_processes)
        ctx = mp.get_context(self.start_method)
        results_queue = ctx.Queue()
        # plain pickle (tensors by value): torch's multiprocessing pickler would move every tensor to
        # shared memory through file descriptors, which sandboxes and small /dev/shm often refuse
        payload = pickle.dumps((function, args, kwargs))
        spawn_args = (payload, cluster, threads, results_queue)
        # the children read OMP_NUM_THREADS when they import torch, before any code of ours runs
        saved = os.environ.get("OMP_NUM_THREADS")
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            context = mp.start_processes(
                _spawned_worker, args=spawn_args, nprocs=self.local_processes, join=False, start_method=self.start_method
            )
        finally:
            if threads is not None:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
        sent = _NOTHING
        # read while joining: rank zero cannot exit before its results are read off the pipe
        while True:
            if sent is _NOTHING:
                try:
                    sent = pickle.loads(results_queue.get(timeout=0.05))
                except queue_module.Empty:
                    pass
            if context.join(timeout=0.05, grace_period=FAILURE_GRACE_S):
                break
        if sent is _NOTHING:
            try:
                sent = pickle.loads(results_queue.get(timeout=5.0))
            except queue_module.Empty:
                raise RuntimeError("ddp_spawn: the processes ended without sending rank zero's results back") from None
        return sent


_NOTHING = object()
_IN_SPAWNED_WORKER = False


def in_spawned_worker() -> bool:
    """Whether this process was started by :class:`SpawnLauncher` (it must not launch again)."""
    return _IN_SPAWNED_WORKER


def _spawned_worker(local_rank: int, payload: bytes, cluster: ClusterEnv, threads: int | None, queue: Any) -> None:
    global _IN_SPAWNED_WORKER
    _IN_SPAWNED_WORKER = True
    os.environ.update(rank_env(replace_rank(cluster, local_rank)))
    if threads is not None:
        torch.set_num_threads(threads)
    function, args, kwargs = pickle.loads(payload)
    out = function(*args, **kwargs)
    if cluster.global_rank + local_rank == 0:  # global rank zero sends its result back
        queue.put(pickle.dumps(out))
    from ember.distributed.comms import shutdown

    shutdown()  # this process made the group: leave it clean (see shutdown)
