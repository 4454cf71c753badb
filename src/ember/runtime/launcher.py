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
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ember.trainer.trainer import Trainer

# how long the other processes get to report their own error after one failed, before they are killed
FAILURE_GRACE_S = 10.0


@dataclass(frozen=True)
class ClusterEnv:
    """Where this process sits in a run whose processes were started from outside."""

    world_size: int
    global_rank: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun", "slurm", "env" or "process group"

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))


def _int(environ: Any, name: str, default: int | None = None) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def detect_cluster(environ: Any = None) -> ClusterEnv | None:
    """This process's place in an externally launched run, or None when nothing launched one.

    torchrun and generic launchers are recognised by ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; SLURM by ``SLURM_NTASKS`` > 1 outside an interactive job (the master address is
    the job's first node and the port is derived from the job id unless ``MASTER_ADDR``/``MASTER_PORT``
    say otherwise); a process group of several processes that the program set up itself counts too.
    """
    env = os.environ if environ is None else environ
    if all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        world = _int(env, "WORLD_SIZE")
        rank = _int(env, "RANK")
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        node_rank = _int(env, "GROUP_RANK", _int(env, "NODE_RANK", rank // max(1, local_world)))
        return ClusterEnv(
            world_size=world,
            global_rank=rank,
            local_rank=_int(env, "LOCAL_RANK", rank % max(1, local_world)),
            local_world_size=local_world,
            node_rank=node_rank,
            master_addr=env["MASTER_ADDR"],
            master_port=_int(env, "MASTER_PORT"),
            source="torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
        )
    ntasks = _int(env, "SLURM_NTASKS", 0)
    if ntasks > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nnodes = _int(env, "SLURM_JOB_NUM_NODES", _int(env, "SLURM_NNODES", 1))
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        job_id = _int(env, "SLURM_JOB_ID", 0)
        return ClusterEnv(
            world_size=ntasks,
            global_rank=_int(env, "SLURM_PROCID", 0),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            local_world_size=max(1, ntasks // max(1, nnodes)),
            node_rank=_int(env, "SLURM_NODEID", 0),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=_int(env, "MASTER_PORT", 15000 + job_id % 20000),
            source="slurm",
        )
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:  # a group made by hand
        world, rank = dist.get_world_size(), dist.get_rank()
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        return ClusterEnv(
            world,
            rank,
            _int(env, "LOCAL_RANK", rank % local_world),
            local_world,
            rank // local_world,
            "",
            0,
            "process group",
        )
    return None


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[007-010,012],cpu1"`` gives ``"gpu007"``."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]
    if "[" not in first:
        return first
    prefix, rest = first.split("[", 1)
    return prefix + rest.split("]", 1)[0].split(",")[0].split("-")[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def threads_per_process(local_processes: int) -> int:
    """A sane intra-op thread count for one of ``local_processes`` processes on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_processes))


def _rank_env(cluster: ClusterEnv) -> dict[str, str]:
    return {
        "MASTER_ADDR": cluster.master_addr,
        "MASTER_PORT": str(cluster.master_port),
        "WORLD_SIZE": str(cluster.world_size),
        "RANK": str(cluster.global_rank),
        "LOCAL_RANK": str(cluster.local_rank),
        "LOCAL_WORLD_SIZE": str(cluster.local_world_size),
        "NODE_RANK": str(cluster.node_rank),
        "GROUP_RANK": str(cluster.node_rank),
    }


def _planned_cluster(local_processes: int, num_nodes: int) -> ClusterEnv:
    """Where this process (local rank 0) sits in a run that it is about to start."""
    node_rank = _int(os.environ, "NODE_RANK", 0)
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
    port = _int(os.environ, "MASTER_PORT") or free_port(addr if addr in ("127.0.0.1", "localhost") else "0.0.0.0")
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
        os.environ.update(_rank_env(cluster))  # this process is local rank 0 from now on
        for local_rank in range(1, self.local_processes):
            env = dict(os.environ)
            env.update(_rank_env(_replace_rank(cluster, local_rank)))
            if threads is not None:
                env["OMP_NUM_THREADS"] = str(threads)
            proc = subprocess.Popen(command, env=env)
            ScriptLauncher._children.append((cluster.global_rank + local_rank, proc))
        if threads is not None and torch.get_num_threads() > threads:
            torch.set_num_threads(threads)
        atexit.register(_wait_for_children)
        threading.Thread(target=_watch_children, name="ember-ddp-watch", daemon=True).start()


def _replace_rank(cluster: ClusterEnv, local_rank: int) -> ClusterEnv:
    return ClusterEnv(
        world_size=cluster.world_size,
        global_rank=cluster.node_rank * cluster.local_world_size + local_rank,
        local_rank=local_rank,
        local_world_size=cluster.local_world_size,
        node_rank=cluster.node_rank,
        master_addr=cluster.master_addr,
        master_port=cluster.master_port,
        source=cluster.source,
    )


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
    """Runs a Trainer stage in ``local_processes`` fresh processes (``torch.multiprocessing``) and
    copies rank zero's results back into this process's Trainer and model."""

    def __init__(self, local_processes: int, num_nodes: int, start_method: str = "spawn") -> None:
        if start_method not in ("spawn", "fork", "forkserver"):
            raise ValueError(f"start_method={start_method!r}; choose 'spawn', 'fork' or 'forkserver'")
        self.local_processes = local_processes
        self.num_nodes = num_nodes
        self.start_method = start_method

    def launch(self, function: Any, stage: str, model: Any, datamodule: Any, ckpt_path: Any, **loaders: Any) -> Any:
        """Run ``function`` (a Trainer's ``_run_stage``) for ``stage`` in every process; the
        Trainer and ``model`` here get rank zero's results."""
        import queue as queue_module

        import torch.multiprocessing as mp

        trainer = function.__self__
        cluster = _planned_cluster(self.local_processes, self.num_nodes)
        threads = None if "OMP_NUM_THREADS" in os.environ else threads_per_process(self.local_processes)
        ctx = mp.get_context(self.start_method)
        results_queue = ctx.Queue()
        # plain pickle (tensors by value): torch's multiprocessing pickler would move every tensor to
        # shared memory through file descriptors, which sandboxes and small /dev/shm often refuse
        payload = pickle.dumps((function, stage, model, datamodule, ckpt_path, loaders))
        args = (payload, cluster, threads, results_queue)
        # the children read OMP_NUM_THREADS when they import torch, before any code of ours runs
        saved = os.environ.get("OMP_NUM_THREADS")
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            context = mp.start_processes(
                _spawned_worker, args=args, nprocs=self.local_processes, join=False, start_method=self.start_method
            )
        finally:
            if threads is not None:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
        results = None
        # read while joining: rank zero cannot exit before its results are read off the pipe
        while True:
            if results is None:
                try:
                    results = pickle.loads(results_queue.get(timeout=0.05))
                except queue_module.Empty:
                    pass
            if context.join(timeout=0.05, grace_period=FAILURE_GRACE_S):
                break
        if results is None:
            try:
                results = pickle.loads(results_queue.get(timeout=5.0))
            except queue_module.Empty:
                raise RuntimeError("ddp_spawn: the processes ended without sending rank zero's results back") from None
        _apply_results(trainer, model, stage, results)
        return [] if stage == "fit" else [None] * results["num_loaders"]


def _spawned_worker(local_rank: int, payload: bytes, cluster: ClusterEnv, threads: int | None, queue: Any) -> None:
    function, stage, model, datamodule, ckpt_path, loaders = pickle.loads(payload)
    trainer = function.__self__
    os.environ.update(_rank_env(_replace_rank(cluster, local_rank)))
    if threads is not None:
        torch.set_num_threads(threads)
    if trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    trainer.strategy._in_worker = True
    out = trainer._run_stage(stage, model, datamodule, ckpt_path, **loaders)
    if trainer.is_global_zero:
        queue.put(pickle.dumps(_collect_results(trainer, model, stage, out)))
    from ember.distributed.comms import shutdown

    shutdown()  # this process made the group: leave it clean (see shutdown)


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def _collect_results(trainer: Trainer, model: Any, stage: str, out: Any) -> dict[str, Any]:
    """What the main process needs from rank zero after a spawned stage."""
    logging = trainer._logging
    callbacks = {}
    for i, cb in enumerate(trainer.callbacks):
        if callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None)):
            callbacks[i] = cb.state_dict()
    return {
        "state_dict": _cpu(trainer.strategy.model_state_dict(model)),
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "callback": _cpu(dict(logging.callback)),
        "logged": _cpu(dict(logging.logged)),
        "progress": dict(logging.progress),
        "results": dict(trainer._eval[stage].results) if stage in trainer._eval else {},
        "predictions": _cpu(trainer._eval["predict"].predictions) if stage == "predict" else None,
        "callbacks": callbacks,
        "num_loaders": 0 if stage == "fit" else len(out),
    }


def _apply_results(trainer: Trainer, model: Any, stage: str, results: dict[str, Any]) -> None:
    model.load_state_dict(results["state_dict"])
    trainer.model = model
    trainer._fit_loop.global_step = results["global_step"]
    trainer._current_epoch = results["current_epoch"]
    trainer._logging.callback = results["callback"]
    trainer._logging.logged = results["logged"]
    trainer._logging.progress = results["progress"]
    if stage in trainer._eval:
        trainer._eval[stage].results = results["results"]
    if results["predictions"] is not None:
        trainer._eval["predict"].predictions = results["predictions"]
    for i, state in results["callbacks"].items():
        trainer.callbacks[i].load_state_dict(state)
