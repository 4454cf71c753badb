"""What every ``torch.distributed`` strategy shares: where this process sits, launching the others,
the process group (``gloo`` on CPU, ``nccl`` on CUDA), collectives, and errors that name their rank."""

from __future__ import annotations

import atexit
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from ember.distributed import comms
from ember.distributed.cluster import ClusterEnv, detect_cluster
from ember.runtime.base import Strategy
from ember.runtime.launcher import ScriptLauncher, SpawnLauncher, in_spawned_worker, note_failure

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # torch's own default for collectives


def _timeout(value: Any) -> datetime.timedelta:
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"timeout={value!r} must be a datetime.timedelta or a number of seconds")
    if seconds <= 0:
        raise ValueError(f"timeout={value!r} must be positive")
    return datetime.timedelta(seconds=seconds)


class ParallelStrategy(Strategy):
    """One process per device on ``num_nodes`` machines, joined in a ``torch.distributed`` group.

    Args:
        timeout: how long a collective waits for the other processes before it fails (a
            ``timedelta`` or seconds); bounds how long a rank can hang when another one is stuck.
        process_group_backend: ``"gloo"``, ``"nccl"``, ...; default ``nccl`` on CUDA, ``gloo`` on CPU.
        start_method: how processes are started from a plain script: ``"popen"`` re-runs the script
            (``strategy="ddp"``), ``"spawn"``/``"fork"``/``"forkserver"`` use torch.multiprocessing
            (``strategy="ddp_spawn"``). Ignored when torchrun or SLURM started the processes.
    """

    #: evaluation loaders are split without padding (exact metrics) unless every step is collective
    pad_eval_shards = False

    def __init__(
        self,
        timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
        process_group_backend: str | None = None,
        start_method: str = "popen",
    ) -> None:
        self.timeout = _timeout(timeout)
        if process_group_backend is not None and not isinstance(process_group_backend, str):
            raise TypeError(f"process_group_backend={process_group_backend!r} must be a backend name or None")
        self.process_group_backend = process_group_backend
        if start_method not in ("popen", "spawn", "fork", "forkserver"):
            raise ValueError(f"start_method={start_method!r}; choose 'popen', 'spawn', 'fork' or 'forkserver'")
        self.start_method = start_method
        self.device_type = "cpu"
        self.device_indices: list[int] = [0]
        self.num_nodes = 1
        self.sync_batchnorm = False
        self._cluster: ClusterEnv | None = None
        self._owns_group = False
        self._failed = False

    def configure(
        self,
        device_type: str,
        indices: list[int],
        devices: Any,
        num_nodes: int,
        sync_batchnorm: bool,
        cluster: ClusterEnv | None,
    ) -> None:
        """Take the Trainer's device arguments; check them against what a launcher started."""
        self.device_type = device_type
        self.device_indices = list(indices)
        self.num_nodes = num_nodes
        self.sync_batchnorm = self.sync_batchnorm or sync_batchnorm
        if cluster is not None:
            if devices != "auto" and len(indices) != cluster.local_world_size:
                raise ValueError(
                    f"devices={devices!r} asks for {len(indices)} processes per machine, but the launcher "
                    f"({cluster.source}) started {cluster.local_world_size} (LOCAL_WORLD_SIZE); make them agree or "
                    "leave devices='auto'"
                )
            if num_nodes != 1 and num_nodes != cluster.num_nodes:
                raise ValueError(
                    f"num_nodes={num_nodes!r}, but the launcher ({cluster.source}) started {cluster.world_size} "
                    f"processes, {cluster.local_world_size} per machine ({cluster.num_nodes} machines)"
                )
            if devices == "auto":
                self.device_indices = (
                    list(range(cluster.local_world_size)) if device_type == "cuda" else [0] * cluster.local_world_size
                )
        elif device_type == "cpu":
            self.device_indices = [0] * len(indices)
        self._cluster = cluster

    # ------------------------------------------------------------------ where this process is

    @property
    def cluster(self) -> ClusterEnv:
        """Where this process sits (ranks, world size, master address) as the launcher's environment
        (torchrun, SLURM, Ember's own) describes it; before the processes start, the plan for rank zero."""
        if self._cluster is None:
            self._cluster = detect_cluster() or _planned_cluster_no_port(len(self.device_indices), self.num_nodes)
        return self._cluster

    @property
    def global_rank(self) -> int:  # type: ignore[override]
        return self.cluster.global_rank

    @property
    def local_rank(self) -> int:  # type: ignore[override]
        return self.cluster.local_rank

    @property
    def node_rank(self) -> int:  # type: ignore[override]
        return self.cluster.node_rank

    @property
    def world_size(self) -> int:  # type: ignore[override]
        return self.cluster.world_size

    @property
    def root_device(self) -> torch.device:  # type: ignore[override]
        """This process's device: the CPU, or the CUDA device its local rank is given."""
        if self.device_type == "cpu":
            return torch.device("cpu")
        local = self.local_rank
        index = self.device_indices[local] if local < len(self.device_indices) else local
        return torch.device("cuda", index)

    @property
    def launcher(self) -> Any:
        if in_spawned_worker() or detect_cluster() is not None:
            return None  # this process was started by a launcher
        local = len(self.device_indices)
        if local * self.num_nodes == 1:
            return None
        if self.start_method == "popen":
            return ScriptLauncher(local, self.num_nodes)
        return SpawnLauncher(local, self.num_nodes, self.start_method)

    # ------------------------------------------------------------------ the process group

    @property
    def backend(self) -> str:
        """The process group backend: ``process_group_backend``, else ``"nccl"`` on CUDA and ``"gloo"`` on CPU."""
        return self.process_group_backend or ("nccl" if self.device_type == "cuda" else "gloo")

    def setup_environment(self) -> None:
        cluster = detect_cluster()
        if cluster is None:
            if len(self.device_indices) * self.num_nodes > 1:
                raise RuntimeError(
                    "the processes of this run were not started; run the stage through trainer.fit/validate/test/predict"
                )
            cluster = ClusterEnv(1, 0, 0, 1, 0, "127.0.0.1", 0, "env")
        self._cluster = cluster
        if self.device_type == "cuda":
            torch.cuda.set_device(self.root_device)
        if dist.is_initialized():
            if dist.get_world_size() != cluster.world_size or dist.get_rank() != cluster.global_rank:
                raise RuntimeError(
                    f"a process group of {dist.get_world_size()} processes (this is rank {dist.get_rank()}) is already up, "
                    f"but this run expects rank {cluster.global_rank} of {cluster.world_size}"
                )
            return
        options: dict[str, Any] = {"backend": self.backend, "timeout": self.timeout}
        if self.backend == "nccl":
            options["device_id"] = self.root_device
        if cluster.world_size == 1:  # one process: no rendezvous needed
            dist.init_process_group(store=dist.HashStore(), rank=0, world_size=1, **options)
        else:
            dist.init_process_group(
                store=_rendezvous_store(cluster, self.timeout),
                rank=cluster.global_rank,
                world_size=cluster.world_size,
                **options,
            )
        self._owns_group = True
        atexit.register(self._destroy_group)

    def _destroy_group(self) -> None:
        # at exit, for the group this strategy created (see ember.distributed.comms.shutdown)
        if self._owns_group:
            comms.shutdown(destroy=not self._failed)
        self._owns_group = False

    def on_exception(self, exception: BaseException) -> None:
        self._failed = True
        note_failure()
        if self.world_size > 1 and hasattr(exception, "add_note"):
            note = f"[ember] raised on global rank {self.global_rank} of {self.world_size} (node {self.node_rank}, local rank {self.local_rank}, pid {os.getpid()})"
            if note not in getattr(exception, "__notes__", ()):
                exception.add_note(note)

    # ------------------------------------------------------------------ collectives

    def _distributed(self) -> bool:
        return self.world_size > 1 and dist.is_initialized()

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced over all processes: ``"mean"``, ``"sum"``, ``"max"`` or ``"min"``."""
        if op not in ("mean", "sum", "max", "min"):
            raise ValueError(f"op={op!r}; choose 'mean', 'sum', 'max' or 'min'")
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.tensor(float(tensor))
        if not self._distributed():
            return tensor
        out = tensor.detach().clone()
        comms.all_reduce(out, "SUM" if op in ("mean", "sum") else op.upper())
        return out / self.world_size if op == "mean" else out

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process has reached this call (``name`` only labels it); at once with one process."""
        if self._distributed():
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Process ``src``'s ``obj`` (a tensor or any picklable object) on every process; ``obj`` itself
        with one process."""
        if not self._distributed():
            return obj
        return comms.broadcast(obj, src)

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not self._distributed():
            return decision
        return bool(comms.all_reduce(int(bool(decision)), "MIN" if all else "MAX"))

    def sync_logged(self, entries: list[tuple[str, torch.Tensor, str, float]]) -> list[torch.Tensor]:
        """Reduce logged values over the processes in one collective per kind of reduction.

        ``entries`` are ``(name, value, reduce, weight)``; a ``"mean"`` is weighted by ``weight``
        (the batch sizes behind each process's value), so the result equals the mean over all the
        samples. Every process must log the same names; if they do not, all raise the same error
        instead of waiting on each other.
        """
        if not self._distributed() or not entries:
            return [value for _, value, _, _ in entries]
        names = [name for name, _, _, _ in entries]
        every = comms.all_gather(names)
        if any(other != names for other in every):
            detail = "; ".join(f"rank {r}: {sorted(n)}" for r, n in enumerate(every))
            raise RuntimeError(
                f"self.log(..., sync_dist=True) was called with different names on different processes ({detail})"
            )
        device = comms.device()
        sums = [(i, v, w if r == "mean" else 1.0) for i, (_, v, r, w) in enumerate(entries) if r in ("mean", "sum")]
        out: list[torch.Tensor] = [value for _, value, _, _ in entries]
        if sums:
            vec = torch.stack(
                [
                    torch.stack(
                        [
                            v.detach().to(device, torch.float64).reshape(()) * w,
                            torch.tensor(float(w), dtype=torch.float64, device=device),
                        ]
                    )
                    for _, v, w in sums
                ]
            )
            comms.all_reduce(vec, "SUM")
            for row, (i, v, _) in enumerate(sums):
                total, weight = vec[row]
                value = total / weight if entries[i][2] == "mean" else total
                out[i] = value.to(v.device, v.dtype if v.is_floating_point() else torch.float32)
        for kind in ("max", "min"):
            idx = [i for i, (_, _, r, _) in enumerate(entries) if r == kind]
            if idx:
                vec = torch.stack([entries[i][1].detach().to(device, torch.float64).reshape(()) for i in idx])
                comms.all_reduce(vec, kind.upper())
                for row, i in enumerate(idx):
                    v = entries[i][1]
                    out[i] = vec[row].to(v.device, v.dtype if v.is_floating_point() else torch.float32)
        return out


def _rendezvous_store(cluster: ClusterEnv, timeout: datetime.timedelta) -> Any:
    """The key-value store the processes meet in. Under torchrun the agent hosts it and keeps it
    across restarts (``--max-restarts``), so the keys are prefixed by the restart attempt:
    without that, restarted workers read their predecessors' addresses and fail to connect (what
    ``init_method="env://"`` does in torch 2.13). Elsewhere rank 0 hosts it."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        cluster.master_addr,
        cluster.master_port,
        cluster.world_size,
        is_master=not agent and cluster.global_rank == 0,
        timeout=timeout,
        multi_tenant=not agent,
    )
    if agent:
        return dist.PrefixStore(f"/ember/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    return store


def _planned_cluster_no_port(local: int, num_nodes: int) -> ClusterEnv:
    """Where this process will sit once it starts the run (rank 0 of its machine); no port yet."""
    node_rank = int(os.environ.get("NODE_RANK", "0") or 0)
    return ClusterEnv(local * num_nodes, node_rank * local, 0, local, node_rank, "127.0.0.1", 0, "env")
