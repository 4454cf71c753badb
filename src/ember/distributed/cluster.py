"""Where this process sits in a distributed run: the cluster environment (torchrun, SLURM, or a
process group made by hand), and the environment variables that place a process in a planned one.

Used by the launchers (:mod:`ember.runtime.launcher`) and by :class:`ember.distributed.Parallel`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClusterEnv:
    """Where this process sits in a run whose processes were started from outside (or are about to be)."""

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


def int_env(environ: Any, name: str, default: int | None = None) -> int | None:
    """An integer environment variable (``default`` when unset or empty), or an error naming it."""
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
        world = int_env(env, "WORLD_SIZE")
        rank = int_env(env, "RANK")
        local_world = int_env(env, "LOCAL_WORLD_SIZE", world)
        node_rank = int_env(env, "GROUP_RANK", int_env(env, "NODE_RANK", rank // max(1, local_world)))
        return ClusterEnv(
            world_size=world,
            global_rank=rank,
            local_rank=int_env(env, "LOCAL_RANK", rank % max(1, local_world)),
            local_world_size=local_world,
            node_rank=node_rank,
            master_addr=env["MASTER_ADDR"],
            master_port=int_env(env, "MASTER_PORT"),
            source="torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
        )
    ntasks = int_env(env, "SLURM_NTASKS", 0)
    if ntasks > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nnodes = int_env(env, "SLURM_JOB_NUM_NODES", int_env(env, "SLURM_NNODES", 1))
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        job_id = int_env(env, "SLURM_JOB_ID", 0)
        return ClusterEnv(
            world_size=ntasks,
            global_rank=int_env(env, "SLURM_PROCID", 0),
            local_rank=int_env(env, "SLURM_LOCALID", 0),
            local_world_size=max(1, ntasks // max(1, nnodes)),
            node_rank=int_env(env, "SLURM_NODEID", 0),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int_env(env, "MASTER_PORT", 15000 + job_id % 20000),
            source="slurm",
        )
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:  # a group made by hand
        world, rank = dist.get_world_size(), dist.get_rank()
        local_world = int_env(env, "LOCAL_WORLD_SIZE", world)
        return ClusterEnv(
            world,
            rank,
            int_env(env, "LOCAL_RANK", rank % local_world),
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


def rank_env(cluster: ClusterEnv) -> dict[str, str]:
    """The environment variables that put a process at ``cluster``'s place (as torchrun sets them)."""
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


def replace_rank(cluster: ClusterEnv, local_rank: int) -> ClusterEnv:
    """``cluster`` as seen by the process of ``local_rank`` on the same machine."""
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
