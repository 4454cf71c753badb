"""The distributed pieces that need no second process: choosing and configuring strategies,
reading launcher environments, splitting samplers, SyncBatchNorm conversion, checkpoint layouts,
``ember.distributed`` outside a process group, and lazy imports."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler, TensorDataset

import ember
import ember.distributed as edist
import ember.runtime.strategy
from ember.distributed import ShardedSampler, distribute_loader
from ember.distributed.cluster import detect_cluster, first_slurm_host
from ember.runtime import DDPStrategy, FSDPStrategy, SingleDeviceStrategy, resolve_strategy
from ember.runtime.accelerator import parse_devices
from ember.runtime.launcher import ScriptLauncher, SpawnLauncher

TORCHRUN_RANK1 = {
    "RANK": "1",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "0",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "x",
}


@pytest.fixture
def no_launcher_env(monkeypatch):
    for name in [*TORCHRUN_RANK1, "NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------- choosing a strategy


def test_devices_2_on_cpu_is_ddp_started_from_this_script(tmp_path, no_launcher_env):
    trainer = ember.Trainer(accelerator="cpu", devices=2, default_root_dir=tmp_path)
    strategy = trainer.strategy
    assert isinstance(strategy, DDPStrategy)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.is_global_zero) == (2, 0, 0, True)
    assert trainer.root_device == torch.device("cpu")
    assert isinstance(strategy.launcher, ScriptLauncher) and strategy.backend == "gloo"
    assert isinstance(
        ember.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn").strategy.launcher, SpawnLauncher
    )
    assert isinstance(ember.Trainer(accelerator="cpu", devices=2, strategy="fsdp").strategy, FSDPStrategy)
    one = ember.Trainer(accelerator="cpu", devices=1, strategy="ddp").strategy
    assert one.launcher is None and one.world_size == 1  # DDP in one process: nothing to start
    assert isinstance(ember.Trainer(accelerator="cpu").strategy, SingleDeviceStrategy)


def test_strategy_objects_take_the_trainer_device_arguments(tmp_path, no_launcher_env):
    ddp = DDPStrategy(find_unused_parameters=True, timeout=30, static_graph=True)
    trainer = ember.Trainer(accelerator="cpu", devices=3, num_nodes=1, strategy=ddp, sync_batchnorm=True)
    assert trainer.strategy is ddp and ddp.world_size == 3 and ddp.sync_batchnorm
    assert ddp.timeout == datetime.timedelta(seconds=30) and ddp.ddp_kwargs == {"static_graph": True}


def test_under_torchrun_the_trainer_joins_with_the_launchers_ranks(tmp_path, no_launcher_env):
    for name, value in TORCHRUN_RANK1.items():
        no_launcher_env.setenv(name, value)
    trainer = ember.Trainer(accelerator="cpu", default_root_dir=tmp_path)  # "auto": DDP, as torchrun started 2
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy.launcher is None
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.is_global_zero) == (2, 1, 1, False)
    assert ember.Trainer(accelerator="cpu", devices=2, strategy="ddp").global_rank == 1
    with pytest.raises(ValueError, match=r"devices=3 .*LOCAL_WORLD_SIZE"):
        ember.Trainer(accelerator="cpu", devices=3, strategy="ddp")
    with pytest.raises(ValueError, match=r"num_nodes=2"):
        ember.Trainer(accelerator="cpu", num_nodes=2, strategy="ddp")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 .*strategy='single_device'"):
        ember.Trainer(accelerator="cpu", strategy="single_device")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"devices": 2, "strategy": "single_device"}, ValueError, r"devices=2 needs a distributed strategy"),
        ({"num_nodes": 2, "strategy": "single_device"}, ValueError, r"num_nodes=2 needs"),
        ({"sync_batchnorm": True}, ValueError, r"sync_batchnorm=True needs a distributed strategy"),
        ({"devices": [0, 1]}, ValueError, r"devices=\[0, 1\]: on the CPU give the number of processes"),
        ({"devices": -2}, ValueError, r"devices=-2 is not valid"),
        ({"strategy": "deepspeed"}, ValueError, r"strategy='deepspeed' is not supported"),
        ({"use_distributed_sampler": 1}, TypeError, r"use_distributed_sampler"),
    ],
)
def test_bad_distributed_arguments_fail_at_construction(tmp_path, no_launcher_env, kwargs, error, message):
    with pytest.raises(error, match=message):
        ember.Trainer(accelerator="cpu", default_root_dir=tmp_path, **kwargs)


def test_strategy_options_are_checked():
    with pytest.raises(ValueError, match="device_ids"):
        DDPStrategy(device_ids=[0])
    with pytest.raises(ValueError, match="timeout=-1"):
        DDPStrategy(timeout=-1)
    with pytest.raises(TypeError, match="find_unused_parameters"):
        DDPStrategy(find_unused_parameters="yes")
    with pytest.raises(ValueError, match="start_method='thread'"):
        DDPStrategy(start_method="thread")
    with pytest.raises(ValueError, match="state_dict_type='local'"):
        FSDPStrategy(state_dict_type="local")
    with pytest.raises(TypeError, match="auto_wrap_policy"):
        FSDPStrategy(auto_wrap_policy={1})


@pytest.mark.parametrize(
    ("devices", "indices"),
    [("auto", [0]), (None, [0]), (-1, [0]), ("-1", [0]), (1, [0]), (3, [0, 1, 2]), (" 2 ", [0, 1]), ([0], [0]),
     ((5,), [0]), ("1,", [0])],
)  # fmt: skip
def test_devices_on_the_cpu_are_a_number_of_processes(devices, indices):
    assert parse_devices("cpu", devices) == ("cpu", indices)


@pytest.mark.parametrize(
    ("devices", "message"),
    [(0, "is not valid"), ("two", "is not valid"), (True, "is not valid"), ([], "is not valid"),
     ([-1], "is not valid"), (",1", "is not valid"), ("0,0", "lists a device twice"),
     ("0,1", "on the CPU give the number of processes"), ((0, 1), "on the CPU give the number of processes")],
)  # fmt: skip
def test_bad_devices_on_the_cpu(devices, message):
    with pytest.raises(ValueError, match=f"devices=.*{message}"):
        parse_devices("cpu", devices)


def test_devices_on_gpus_are_indices_checked_against_the_visible_ones(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_devices("auto", "auto") == ("cuda", [0, 1])
    assert parse_devices("gpu", [1]) == ("cuda", [1])
    assert parse_devices("cuda", "1,0") == ("cuda", [1, 0])
    assert parse_devices("cuda", 2) == ("cuda", [0, 1])
    with pytest.raises(ValueError, match=r"devices=3 asks for CUDA device 2, but 2 are visible"):
        parse_devices("cuda", 3)
    with pytest.raises(ValueError, match=r"devices=\[1, 1\] lists a device twice"):
        parse_devices("cuda", [1, 1])


def test_resolve_strategy_without_a_trainer(no_launcher_env):
    assert resolve_strategy is ember.runtime.resolve_strategy is ember.runtime.strategy.resolve_strategy
    single = resolve_strategy("auto", "cpu", 1)
    assert isinstance(single, SingleDeviceStrategy) and single.root_device == torch.device("cpu")
    assert isinstance(resolve_strategy("auto", "cpu", 2), DDPStrategy)
    assert isinstance(resolve_strategy("fsdp", "cpu", 2), FSDPStrategy)
    with pytest.raises(ValueError, match=r"num_nodes=2 needs a distributed strategy, but strategy='single_device'"):
        resolve_strategy("single_device", "cpu", 1, num_nodes=2)
    with pytest.raises(ValueError, match=r"num_nodes=0 must be an integer >= 1"):
        resolve_strategy("auto", "cpu", 1, num_nodes=0)
    with pytest.raises(TypeError, match=r"sync_batchnorm must be True or False"):
        resolve_strategy("auto", "cpu", 1, sync_batchnorm=1)


def test_slurm_and_generic_launchers_are_read_from_the_environment():
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
             "SLURM_JOB_NUM_NODES": "4", "SLURM_JOB_NODELIST": "gpu[007-010],cpu1", "SLURM_JOB_ID": "1234"}  # fmt: skip
    env = detect_cluster(slurm)
    assert (env.world_size, env.global_rank, env.local_rank, env.node_rank, env.local_world_size) == (8, 5, 1, 2, 2)
    assert (env.master_addr, env.master_port, env.source) == ("gpu007", 15000 + 1234, "slurm")
    assert detect_cluster({**slurm, "SLURM_JOB_NAME": "bash"}) is None  # an interactive allocation
    assert detect_cluster({**slurm, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1"}).master_addr == "10.0.0.1"
    generic = detect_cluster(
        {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "5", "LOCAL_WORLD_SIZE": "2"}
    )
    assert (generic.local_rank, generic.node_rank, generic.source) == (1, 1, "env")
    assert detect_cluster({}) is None
    assert first_slurm_host("node1") == "node1"
    assert first_slurm_host("a[1,3-5]") == "a1"
    assert first_slurm_host("x[09-12],y[1-2]") == "x09"


# ---------------------------------------------------------------------- splitting the data


def _flat(batches):
    return [i for batch in batches for i in batch]


def _batches(loader):
    return [b[0].flatten().tolist() for b in loader]


def _shards(loader, replicas=2, training=True, pad_eval=False):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return [distribute_loader(loader, replicas, r, training, pad_eval=pad_eval, seed=5) for r in range(replicas)]


def _index_loader(n, batch_size, **kwargs):
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, **kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_ranks_batches_together_are_the_one_process_batches(shuffle):
    def make(batch):
        gen = torch.Generator().manual_seed(3) if shuffle else None
        return _index_loader(24, batch, shuffle=shuffle, generator=gen)

    single = _batches(make(8))
    ranks = [_batches(distribute_loader(make(4), 2, rank, training=True)) for rank in range(2)]  # a loader per process
    assert all(len(r) == len(single) for r in ranks)
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
    shard = _shards(make(4))[0]
    assert isinstance(shard.sampler, DistributedSampler) and isinstance(shard.sampler, ShardedSampler)
    assert shard.sampler.shuffle is shuffle and len(shard) == 3


def test_drop_last_and_padding_follow_the_loader():
    dropping = _shards(_index_loader(11, 2, drop_last=True))  # one process: 5 batches, sample 10 dropped
    assert [len(_batches(s)) for s in dropping] == [2, 2]  # 5 samples each, last incomplete batch dropped
    assert sorted(_flat(_batches(dropping[0]) + _batches(dropping[1]))) == list(range(8))
    padded = _shards(_index_loader(11, 2))  # padded with sample 0 so both ranks step 3 times
    assert [_flat(_batches(s)) for s in padded] == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 0]]


def test_evaluation_shards_are_not_padded_unless_steps_must_match():
    exact = _shards(_index_loader(13, 4), training=False)
    assert [_flat(_batches(s)) for s in exact] == [list(range(0, 13, 2)), list(range(1, 13, 2))]
    # FSDP gathers parameters every step: only pad when the batch counts would differ
    assert [len(s) for s in _shards(_index_loader(13, 4), training=False, pad_eval=True)] == [2, 2]
    assert _flat(_batches(_shards(_index_loader(13, 4), training=False, pad_eval=True)[1])) == list(range(1, 13, 2))
    uneven = _shards(_index_loader(5, 2), training=False, pad_eval=True)
    assert [len(_batches(s)) for s in uneven] == [2, 2]


def test_a_shuffling_loader_without_generator_gets_one_all_ranks_share():
    loader = _index_loader(16, 4, shuffle=True)
    shards = _shards(loader)
    assert all(isinstance(s.sampler.generator, torch.Generator) for s in shards)
    assert loader.sampler.generator is None  # the user's loader is left as it was
    seen = sorted(_flat(_batches(shards[0]) + _batches(shards[1])))
    assert seen == list(range(16))  # the ranks agree on the order: every sample exactly once


def test_loaders_that_are_not_split(recwarn):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(4))

    stream = DataLoader(Stream(), batch_size=2)
    with pytest.warns(UserWarning, match="IterableDataset"):
        assert distribute_loader(stream, 2, 0, True) is stream

    class Pairs(Sampler):
        def __iter__(self):
            return iter([[0, 1], [2, 3]])

        def __len__(self):
            return 2

    custom = DataLoader(TensorDataset(torch.arange(4)), batch_sampler=Pairs())
    with pytest.warns(UserWarning, match="custom batch_sampler"):
        assert distribute_loader(custom, 2, 0, True) is custom
    ds = TensorDataset(torch.arange(4))
    mine = DataLoader(ds, sampler=DistributedSampler(ds, num_replicas=2, rank=0))
    assert distribute_loader(mine, 2, 0, True) is mine
    assert distribute_loader(mine, 1, 0, True) is mine


def test_sharded_sampler_arguments_and_epochs():
    base = RandomSampler(range(6), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="rank=2"):
        ShardedSampler(base, 2, 2)
    shard = ShardedSampler(base, 2, 1)
    shard.set_epoch(3)
    assert shard.epoch == 3 and shard.generator is base.generator
    assert isinstance(BatchSampler(shard, 2, False), BatchSampler) and len(list(shard)) == 3


# ---------------------------------------------------------------------- modules and checkpoints


class WithBatchNorm(ember.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_sync_batchnorm_converts_batch_norm_layers(tmp_path, no_launcher_env):
    # only the conversion on CPU: torch's SyncBatchNorm runs on CUDA; the numbers are a GPU check
    trainer = ember.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", sync_batchnorm=True, default_root_dir=tmp_path
    )
    model = WithBatchNorm()
    trainer.strategy.setup_module(model)
    assert isinstance(model.net[1], nn.SyncBatchNorm) and not isinstance(model.net[0], nn.SyncBatchNorm)
    plain = WithBatchNorm()
    ember.Trainer(accelerator="cpu", devices=2, strategy="ddp", default_root_dir=tmp_path).strategy.setup_module(plain)
    assert type(plain.net[1]) is nn.BatchNorm1d


def test_fsdp_optimizer_states_use_torchs_indexed_layout():
    from ember.runtime.fsdp import _indexed, _named

    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    opt = torch.optim.SGD(
        [{"params": [model[1].weight]}, {"params": [model[0].weight, model[0].bias, model[1].bias]}],
        lr=0.1,
        momentum=0.9,
    )
    model(torch.randn(4, 2)).sum().backward()
    opt.step()
    indexed = opt.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = _named(indexed, model, opt)
    assert by_name["param_groups"][0]["params"] == [names[id(model[1].weight)]]
    assert torch.equal(by_name["state"]["0.bias"]["momentum_buffer"], indexed["state"][2]["momentum_buffer"])
    back = _indexed(by_name)
    assert back["param_groups"] == indexed["param_groups"]
    assert all(
        torch.equal(back["state"][i]["momentum_buffer"], indexed["state"][i]["momentum_buffer"]) for i in range(4)
    )


def test_a_sharded_checkpoint_directory_is_refused_by_other_strategies(tmp_path):
    (tmp_path / "sharded").mkdir()
    with pytest.raises(ValueError, match="trusted_sharded_checkpoints=True"):
        SingleDeviceStrategy(torch.device("cpu")).load_checkpoint(tmp_path / "sharded")
    with pytest.raises(ValueError, match="can run code"):
        FSDPStrategy().load_checkpoint(tmp_path / "sharded")
    with pytest.raises(ValueError, match="not an Ember sharded checkpoint"):
        FSDPStrategy(trusted_sharded_checkpoints=True).load_checkpoint(tmp_path / "sharded")


# ---------------------------------------------------------------------- ember.distributed alone


def test_helpers_outside_a_process_group():
    assert (edist.get_rank(), edist.get_world_size(), edist.get_local_rank(), edist.get_node_rank()) == (0, 1, 0, 0)
    cpu_only = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    assert edist.backend() is None and (edist.device() == torch.device("cpu") or not cpu_only)
    t = torch.tensor([1.0, 2.0])
    assert edist.all_reduce(t) is t and edist.all_reduce(3) == 3
    assert edist.all_gather(t) is t and edist.all_gather("a") == ["a"]
    assert edist.all_gather(torch.tensor(1.0)).shape == ()  # as Ignite: a tensor comes back as it is
    assert edist.broadcast({"k": 1}) == {"k": 1}
    with pytest.raises(ValueError, match="got None on the source rank"):
        edist.broadcast(None, safe_mode=True)
    edist.barrier()
    assert edist.new_group([0]) == [0]
    with pytest.raises(ValueError, match="ranks must be a list of ints"):
        edist.new_group((0, 1))
    assert edist.all_gather_tensors_with_shapes(t, [[2]]) == [t]
    assert edist.model_name() == "serial" and edist.hostname()
    assert "gloo" in edist.available_backends() and edist.has_native_dist_support
    assert not edist.has_xla_support and not edist.has_hvd_support
    order = []
    with edist.one_rank_first():
        order.append("first")
    with pytest.raises(ValueError, match=r"rank=1 must be in \[0, 0\]"):
        with edist.one_rank_first(rank=1):
            pass
    assert order == ["first"]
    with pytest.raises(ValueError, match="op='AVG'"):
        edist.all_reduce(t, op="AVG")
    calls = []
    assert edist.one_rank_only()(lambda: calls.append(1) or "ran")() == "ran" and calls == [1]
    assert edist.one_rank_only(rank=1)(lambda: calls.append(2))() is None and calls == [1]


def test_parallel_without_backend_runs_here():
    with edist.Parallel() as parallel:
        assert parallel.run(lambda local_rank, x: (local_rank, x * 2), 21) == (0, 42)
    # the arguments argparse leaves as None are "not given"
    with edist.Parallel(backend=None, nproc_per_node=None, nnodes=None, node_rank=None, master_addr=None) as parallel:
        assert parallel.run(lambda local_rank: edist.backend()) is None
    with pytest.raises(ValueError, match="nproc_per_node=2 needs a backend"):
        edist.Parallel(nproc_per_node=2)
    with pytest.raises(ValueError, match="backend='tcp'"):
        edist.Parallel(backend="tcp")
    with pytest.raises(ValueError, match="nnodes=2 needs"):
        edist.Parallel(backend="gloo", nproc_per_node=1, nnodes=2)
    with pytest.raises(ValueError, match="TCP initialization would hang"):
        edist.Parallel(backend="gloo", init_method="tcp://127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"unknown arguments \['daemon'\]"):
        edist.Parallel(backend="gloo", daemon=True)


def test_parallel_with_a_backend_and_no_launcher_makes_a_one_process_group(no_launcher_env):
    no_launcher_env.delenv("MASTER_ADDR", raising=False)
    with edist.Parallel(backend="gloo") as parallel:
        seen = parallel.run(lambda local_rank: (local_rank, edist.backend(), edist.get_world_size(), edist.model_name()))
    assert seen == (0, "gloo", 1, "native-dist")
    assert not edist.is_initialized() and "RANK" not in os.environ  # finalize() put the environment back


def test_initialize_and_finalize(no_launcher_env):
    with pytest.raises(ValueError, match="backend='xla-tpu' is not available"):
        edist.initialize("xla-tpu")
    with pytest.raises(ValueError, match="rank and world_size need an init_method"):
        edist.initialize("gloo", rank=0)
    with pytest.raises(ValueError, match="give both rank and world_size"):
        edist.initialize("gloo", init_method="env://", rank=0)
    with pytest.raises(ValueError, match="TCP initialization would hang"):
        edist.initialize("gloo", init_method="tcp://127.0.0.1:1")
    no_launcher_env.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="sets \\['RANK'\\] but not all"):
        edist.initialize("gloo")
    no_launcher_env.delenv("RANK")
    edist.initialize("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        assert (edist.get_rank(), edist.get_world_size(), edist.backend(), edist.model_name()) == (0, 1, "gloo", "native-dist")
        with pytest.raises(ValueError, match="already initialized"):
            edist.initialize("gloo")
        edist.set_local_rank(0)
        assert edist.all_gather(3) == [3] and edist.broadcast("x", safe_mode=True) == "x"
        assert edist.all_gather(torch.tensor(2.0)).tolist() == [2.0]
    finally:
        edist.finalize()
    assert not edist.is_initialized() and "RANK" not in os.environ


def test_import_ember_loads_no_fsdp_dtensor_sympy_or_distributed_checkpoint():
    # torch.optim itself imports torch._dynamo (and with it FSDP and sympy) when the first optimizer
    # is built; what Ember controls is that importing it and choosing a strategy loads none of them
    code = (
        "import sys, ember, ember.distributed, ember.runtime; "
        "ember.runtime.DDPStrategy; ember.runtime.FSDPStrategy; "
        "ember.Trainer(accelerator='cpu', devices=2, strategy='fsdp'); ember.Trainer(accelerator='cpu'); "
        "heavy = ['torch.distributed.fsdp', 'torch.distributed.tensor', 'torch.distributed.checkpoint', 'sympy']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
