"""Distributed helpers for the Engine level, in the spirit of Ignite's ``idist``.

``get_rank``/``get_world_size``/``get_local_rank``/... say where this process sits; ``all_reduce``,
``all_gather``, ``broadcast`` and ``barrier`` work on tensors, numbers and picklable objects, and
return their input when there is no process group; ``Parallel`` starts N processes (or joins a
torchrun/SLURM job) and runs a function in each; ``ShardedSampler``/``distribute_loader`` split a
DataLoader's samples over the processes without changing how it samples.

Example::

    import ember.distributed as edist

    def training(local_rank):
        total = edist.all_reduce(torch.tensor(1.0))   # == world size

    with edist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(training)
"""

from ember.distributed.comms import (
    all_gather,
    all_reduce,
    backend,
    barrier,
    broadcast,
    device,
    get_local_rank,
    get_nnodes,
    get_node_rank,
    get_nproc_per_node,
    get_rank,
    get_world_size,
    is_initialized,
    one_rank_only,
)
from ember.distributed.parallel import Parallel
from ember.distributed.sampler import ShardedSampler, distribute_loader

__all__ = [
    "Parallel",
    "ShardedSampler",
    "all_gather",
    "all_reduce",
    "backend",
    "barrier",
    "broadcast",
    "device",
    "distribute_loader",
    "get_local_rank",
    "get_nnodes",
    "get_node_rank",
    "get_nproc_per_node",
    "get_rank",
    "get_world_size",
    "is_initialized",
    "one_rank_only",
]
