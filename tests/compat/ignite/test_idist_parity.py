"""``ember.distributed`` as ``idist`` against the real ``ignite.distributed``: the same names, the same
answers outside a process group, inside a one-process gloo group made by ``initialize``, and in two
gloo processes started by ``Parallel`` / ``spawn``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from ignite_kit import EMBER, IGNITE, assert_same, on_both, outcome

from ember.distributed.cluster import free_port

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK",
                 "GROUP_RANK", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_NTASKS")  # fmt: skip


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_name_of_ignite_distributed_exists():
    """Deliberate difference: Ignite's computation-model internals (``native``, ``xla``,
    ``registered_computation_models``) have no counterpart; Ember reads torch.distributed directly."""
    names = {n for n in dir(IGNITE.idist) if not n.startswith("_") and n not in ("auto", "comp_models", "launcher", "utils")}
    assert sorted(n for n in names if not hasattr(EMBER.idist, n)) == ["native", "registered_computation_models", "xla"]


def observe(idist) -> dict:
    """What a script sees of its place in the run and of the collectives, on any number of processes."""
    rank = idist.get_rank()
    group = idist.new_group(list(range(idist.get_world_size())))
    order = []
    with idist.one_rank_first():
        order.append(rank)
    t = torch.tensor([float(rank + 1), 2.0])
    seen = {
        "where": [idist.get_rank(), idist.get_local_rank(), idist.get_world_size(), idist.get_nproc_per_node(),
                  idist.get_nnodes(), idist.get_node_rank(), idist.backend(), idist.model_name(), idist.device().type],
        "support": [idist.has_native_dist_support, idist.has_xla_support, idist.has_hvd_support,
                    "gloo" in idist.available_backends(), idist.hostname() != ""],
        "all_reduce": [idist.all_reduce(t.clone()).tolist(), idist.all_reduce(rank + 1), idist.all_reduce(rank + 0.5),
                       idist.all_reduce(t.clone(), op="MAX").tolist(), idist.all_reduce(t.clone(), group=group).tolist()],
        "all_gather": [idist.all_gather(t).tolist(), idist.all_gather(torch.tensor(rank * 1.0)).tolist(),
                       idist.all_gather(rank), idist.all_gather(f"r{rank}"), idist.all_gather({"rank": rank}),
                       idist.all_gather(tensor=t, group=group).tolist()],
        "shapes": [x.tolist() for x in idist.all_gather_tensors_with_shapes(
            torch.ones(rank + 1, 2) * rank, [[r + 1, 2] for r in range(idist.get_world_size())])],
        "broadcast": [idist.broadcast(t.clone(), src=0).tolist(), idist.broadcast(3.5 if rank == 0 else 0.0),
                      idist.broadcast("abc" if rank == 0 else ""),
                      str(idist.broadcast(Path("/a/b") if rank == 0 else None, safe_mode=True)),
                      idist.broadcast(torch.arange(3.0) if rank == 0 else None, safe_mode=True).tolist()],
        "errors": [outcome(lambda: idist.new_group((0,)))],
        "one_rank": [idist.one_rank_only()(lambda: "ran")(), order],
        "auto": [[b.tolist() for b in idist.auto_dataloader(list(range(10)), batch_size=4, shuffle=False)],
                 [b.tolist() for b in idist.auto_dataloader(list(range(7)), batch_size=2, num_workers=0,
                                                            sampler=torch.utils.data.SequentialSampler(range(7)))],
                 type(idist.auto_model(torch.nn.Linear(2, 1))).__name__],
    }  # fmt: skip
    idist.barrier()
    return seen


def test_outside_a_process_group(no_launcher):
    def scenario(side):
        idist = side.idist
        idist.sync()
        idist.show_config()
        return observe(idist), outcome(lambda: idist.broadcast(None)), outcome(lambda: idist.broadcast(None, safe_mode=True))

    assert_same(scenario)
    # Deliberate difference: Ember checks ``op`` with or without a process group; Ignite's serial
    # model returns the input whatever ``op`` says
    t = torch.ones(2)
    assert outcome(lambda: IGNITE.idist.all_reduce(t, op="AVG"))[0] == "ok"
    assert outcome(lambda: EMBER.idist.all_reduce(t, op="AVG")) == ("raises", "ValueError")


def test_one_process_group_from_initialize(no_launcher):
    def scenario(side):
        no_launcher.setenv("MASTER_PORT", str(free_port()))
        idist = side.idist
        idist.initialize("gloo")
        try:
            seen = observe(idist), outcome(lambda: idist.initialize("gloo"))
        finally:
            idist.finalize()
        return seen, idist.model_name(), "RANK" in os.environ

    assert_same(scenario)


def test_auto_helpers_in_one_process():
    def scenario(side):
        idist = side.idist
        torch.manual_seed(0)
        loader = idist.auto_dataloader(torch.arange(10.0), batch_size=3, shuffle=True, drop_last=True)
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        proxy = idist.DistributedProxySampler(torch.utils.data.RandomSampler(range(9)), num_replicas=2, rank=1)
        proxy.set_epoch(3)
        return (type(loader).__name__, loader.batch_size, loader.drop_last, loader.pin_memory, type(loader.sampler).__name__,
                [b.tolist() for b in loader], idist.auto_model(model) is model, idist.auto_optim(optimizer) is optimizer,
                list(proxy), len(proxy), outcome(lambda: idist.DistributedProxySampler([1, 2], num_replicas=2, rank=0)))  # fmt: skip

    assert_same(scenario)


@pytest.mark.parametrize(
    "kwargs",
    [{"rank": 0}, {"init_method": "env://", "world_size": 1}, {"init_method": "tcp://127.0.0.1:1"}, {"backend": "xla-tpu"},
     {"timeout": 5}],
    ids=str,
)  # fmt: skip
def test_initialize_rejects(no_launcher, kwargs):
    """Deliberate difference: Ember checks ``rank``/``world_size``/unknown arguments before making a
    group; Ignite's ``initialize`` makes one from the environment whatever they say."""

    def scenario(side):
        no_launcher.setenv("MASTER_PORT", str(free_port()))
        backend = kwargs.get("backend", "gloo")
        result = outcome(lambda: side.idist.initialize(backend, **{k: v for k, v in kwargs.items() if k != "backend"}))
        if side.idist.model_name() != "serial":
            side.idist.finalize()
        return result

    ignite_result, ember_result = on_both(scenario)
    assert ember_result[0] == "raises"
    if {"rank", "world_size"} & set(kwargs) and "tcp://" not in str(kwargs):
        assert ignite_result == ("ok", None)
    else:
        assert ember_result == ignite_result


@pytest.mark.parametrize(
    "kwargs",
    [{"nproc_per_node": 2}, {"nnodes": 2}, {"master_port": 1234}, {"backend": "tcp"},
     {"backend": "gloo", "init_method": "tcp://127.0.0.1:1"}, {"backend": "gloo", "nproc_per_node": 2, "nnodes": 2},
     {"backend": "gloo", "nproc_per_node": 2, "nnodes": 2, "node_rank": 0},
     {"backend": "gloo", "nproc_per_node": 0}, {"backend": "gloo", "nproc_per_node": 2, "node_rank": 3}],
    ids=str,
)  # fmt: skip
def test_parallel_rejects(kwargs):
    assert_same(lambda side: outcome(lambda: side.idist.Parallel(**kwargs) and None))


def test_parallel_with_argparse_nones_runs_here(no_launcher):
    def scenario(side):
        args = {"backend": None, "nproc_per_node": None, "nnodes": None, "node_rank": None, "master_addr": None,
                "master_port": None, "init_method": None}  # fmt: skip
        with side.idist.Parallel(**args) as parallel:
            parallel.run(lambda local_rank, a, b=0: seen.append((local_rank, a, b, side.idist.backend())), 1, b=2)
        return seen

    seen: list = []
    on_both(scenario)
    assert seen[:1] == seen[1:] == [(0, 1, 2, None)]


WORKER = """
import json, os, sys
from pathlib import Path
import torch

def work(local_rank, side_name, out_dir):
    torch.set_num_threads(1)
    sys.path.insert(0, {kit_dir!r})
    import ignite_kit, test_idist_parity
    idist = ignite_kit.Side(side_name).idist
    seen = test_idist_parity.observe(idist)
    seen["local_rank_arg"] = local_rank
    Path(out_dir, f"rank{{idist.get_rank()}}.json").write_text(json.dumps(seen))
"""

MAIN = """
import sys
sys.path.insert(0, {here!r})
sys.path.insert(0, {kit_dir!r})
import ignite_kit, worker

if __name__ == "__main__":
    side, how, out_dir, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    idist = ignite_kit.Side(side).idist
    if how == "parallel":
        with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=port) as parallel:
            parallel.run(worker.work, side, out_dir)
    else:
        idist.spawn("gloo", worker.work, args=(side, out_dir), nproc_per_node=2, master_port=port)
"""


@pytest.mark.parametrize("how", ["parallel", "spawn"])
def test_two_gloo_processes(tmp_path, how):
    """Each side starts two gloo processes its own way; every process writes what it observed."""
    kit_dir = str(Path(__file__).resolve().parent)
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER.format(kit_dir=kit_dir)))
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN.format(here=str(tmp_path), kit_dir=kit_dir)))
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["OMP_NUM_THREADS"] = "1"

    def scenario(side):
        out = tmp_path / side.name
        out.mkdir()
        done = subprocess.run([sys.executable, str(tmp_path / "main.py"), side.name, how, str(out), str(free_port())],
                              env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    ranks = assert_same(scenario)
    assert [r["where"][:3] for r in ranks] == [[0, 0, 2], [1, 1, 2]]
    assert ranks[0]["all_reduce"][0] == [3.0, 4.0] and ranks[1]["broadcast"][4] == [0.0, 1.0, 2.0]
