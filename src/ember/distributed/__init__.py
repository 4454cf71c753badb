"""Distributed helpers for the Engine level, in the spirit of Ignite's ``idist``.

``get_rank``/``get_world_size``/``get_local_rank``/... say where this process sits; ``all_reduce``,
``all_gather``, ``broadcast`` and ``barrier`` work on tensors, numbers and picklable objects, and
return their input when there is no process group; ``Parallel`` starts N processes (or joins a
torchrun/SLURM job) and runs a function in each; ``ShardedSampler``/``distribute_loader`` split a
DataLoader's samples over the processes without changing how it samples.

It is a drop-in for ``ignite.distributed`` (``import ember.distributed as idist``): the same
names, arguments and results; ``initialize``/``finalize``, ``spawn`` and ``Parallel`` set runs up.

Example::

    import ember.distributed as edist

    def training(local_rank):
        total = edist.all_reduce(torch.tensor(1.0))   # == world size

    with edist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(training)
"""

from ember.distributed.auto import DistributedProxySampler, auto_dataloader, auto_model, auto_optim
from ember.distributed.comms import (
    all_gather,
    all_gather_tensors_with_shapes,
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
    new_group,
    one_rank_first,
    one_rank_only,
    set_local_rank,
)
from ember.distributed.parallel import Parallel, spawn
from ember.distributed.sampler import ShardedSampler, distribute_loader
from ember.distributed.setup import (
    available_backends,
    finalize,
    has_hvd_support,
    has_native_dist_support,
    has_xla_support,
    hostname,
    initialize,
    model_name,
    show_config,
    sync,
)

__all__ = [
    "DistributedProxySampler",
    "Parallel",
    "ShardedSampler",
    "all_gather",
    "all_gather_tensors_with_shapes",
    "all_reduce",
    "auto_dataloader",
    "auto_model",
    "auto_optim",
    "available_backends",
    "backend",
    "barrier",
    "broadcast",
    "device",
    "distribute_loader",
    "finalize",
    "get_local_rank",
    "get_nnodes",
    "get_node_rank",
    "get_nproc_per_node",
    "get_rank",
    "get_world_size",
    "has_hvd_support",
    "has_native_dist_support",
    "has_xla_support",
    "hostname",
    "initialize",
    "is_initialized",
    "model_name",
    "new_group",
    "one_rank_first",
    "one_rank_only",
    "set_local_rank",
    "show_config",
    "spawn",
    "sync",
]
