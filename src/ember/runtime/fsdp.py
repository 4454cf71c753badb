"""``FSDPStrategy``: fully sharded data parallel on FSDP2 (``torch.distributed.fsdp.fully_shard``).

Each process keeps a shard of every parameter, gradient and optimizer state; the full parameters
of a layer are gathered just before its forward and backward and dropped after. The layers named
by ``auto_wrap_policy`` are sharded as units (gathered one at a time), then the whole module; its
``training_step``/``validation_step``/``test_step``/``predict_step`` are registered as forward
methods, so the gathering happens around them as it would around ``forward``.

Checkpoints:

- ``state_dict_type="full"`` (default): every process helps gather the weights and optimizer
  states, rank zero writes one ordinary Ember checkpoint file, with the optimizer states in
  torch's usual indexed layout: it loads in a single process, under DDP, or back under FSDP.
- ``state_dict_type="sharded"`` (for ``trainer.save_checkpoint``): each process writes its own
  shards with ``torch.distributed.checkpoint`` into a temporary directory, which is renamed into
  place when all are done. Its metadata file is read with ``pickle`` by torch, so such a
  checkpoint may run code when loaded: it loads only with ``trusted_sharded_checkpoints=True``.
  ``ModelCheckpoint`` always writes full checkpoints.

Everything from ``torch.distributed.fsdp``/``checkpoint``/``tensor`` is imported when first used
(it pulls in DTensor and sympy): ``import ember`` and building this strategy import none of it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from ember.runtime.ddp import convert_sync_batchnorm
from ember.runtime.parallel import DEFAULT_TIMEOUT, ParallelStrategy

STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")
_META_FILE = "ember.ckpt"  # the plain part of a sharded checkpoint directory


class FSDPStrategy(ParallelStrategy):
    """Shard parameters, gradients and optimizer states over the processes with FSDP2.

    Args:
        auto_wrap_policy: which submodules to shard as their own units: a set of module classes
            (e.g. ``{nn.TransformerEncoderLayer}``) or a function ``module -> bool``; None shards
            the whole model as one unit.
        reshard_after_forward: free the gathered parameters after forward (re-gather them for
            backward); False keeps them until backward (more memory, less communication).
        mixed_precision: a ``torch.distributed.fsdp.MixedPrecisionPolicy``, or None.
        cpu_offload: keep the shards and optimizer states in CPU memory.
        state_dict_type: ``"full"`` or ``"sharded"`` (see the module docstring).
        trusted_sharded_checkpoints: allow loading sharded checkpoints (their metadata is unpickled).
        timeout: as for :class:`~ember.runtime.ddp.DDPStrategy`.
        process_group_backend: as for :class:`~ember.runtime.ddp.DDPStrategy`.
        start_method: as for :class:`~ember.runtime.ddp.DDPStrategy`.

    Example::

        Trainer(accelerator="cpu", devices=2, strategy=FSDPStrategy(auto_wrap_policy={Block}))
    """

    collective_state_dict = True
    pad_eval_shards = True  # every evaluation step gathers parameters: all ranks need as many batches

    def __init__(
        self,
        auto_wrap_policy: set[type] | Callable[[nn.Module], bool] | None = None,
        reshard_after_forward: bool = True,
        mixed_precision: Any = None,
        cpu_offload: bool = False,
        state_dict_type: str = "full",
        trusted_sharded_checkpoints: bool = False,
        timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
        process_group_backend: str | None = None,
        start_method: str = "popen",
    ) -> None:
        super().__init__(timeout=timeout, process_group_backend=process_group_backend, start_method=start_method)
        if auto_wrap_policy is not None and not callable(auto_wrap_policy):
            classes = tuple(auto_wrap_policy)
            if not classes or not all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
                raise TypeError(
                    f"auto_wrap_policy={auto_wrap_policy!r} must be a set of nn.Module classes, a function or None"
                )
        if state_dict_type not in ("full", "sharded"):
            raise ValueError(f"state_dict_type={state_dict_type!r}; choose 'full' or 'sharded'")
        for name, flag in (
            ("reshard_after_forward", reshard_after_forward),
            ("cpu_offload", cpu_offload),
            ("trusted_sharded_checkpoints", trusted_sharded_checkpoints),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.auto_wrap_policy = auto_wrap_policy
        self.reshard_after_forward = reshard_after_forward
        self.mixed_precision = mixed_precision
        self.cpu_offload = cpu_offload
        self.state_dict_type = state_dict_type
        self.trusted_sharded_checkpoints = trusted_sharded_checkpoints
        self._module: Any = None
        self._pending_sharded: str | None = None  # a sharded checkpoint being restored

    @property
    def saves_sharded(self) -> bool:
        return self.state_dict_type == "sharded"

    # ------------------------------------------------------------------ the module

    def _wraps(self, module: nn.Module) -> bool:
        policy = self.auto_wrap_policy
        if policy is None:
            return False
        if callable(policy) and not isinstance(policy, (set, frozenset, list, tuple)):
            return bool(policy(module))
        return isinstance(module, tuple(policy))

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Shard ``module`` in place with ``fully_shard`` over all processes: the submodules chosen by
        ``auto_wrap_policy`` first, then the whole module (moved to this process's device first, unless
        ``cpu_offload``); its ``*_step`` methods gather parameters as ``forward`` does. A module sharded
        by an earlier stage is kept as it is."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, fully_shard, register_fsdp_forward_method

        if isinstance(module, FSDPModule):  # sharded by an earlier stage
            self._module = module
            return module
        if not self.cpu_offload:
            module.to(self.root_device)
        if self.sync_batchnorm:
            module = convert_sync_batchnorm(module)
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": self.reshard_after_forward}
        if self.mixed_precision is not None:
            options["mp_policy"] = self.mixed_precision
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        # children before parents: a unit's parameters must not already belong to an outer unit
        for sub in reversed([m for _, m in module.named_modules() if m is not module]):
            if self._wraps(sub):
                fully_shard(sub, **options)
        fully_shard(module, **options)
        for name in STEP_METHODS:
            if callable(getattr(type(module), name, None)):
                register_fsdp_forward_method(module, name)
        self._module = module
        return module

    def no_sync(self) -> Callable[[], Any] | None:
        module = self._module
        if module is None:
            return None

        @contextlib.contextmanager
        def no_gradient_sync() -> Iterator[None]:
            module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                module.set_requires_gradient_sync(True)

        return no_gradient_sync

    # ------------------------------------------------------------------ checkpoints

    def model_state_dict(self, module: nn.Module, sharded: bool = False) -> dict[str, Any]:
        """Full (gathered on every rank, returned on rank zero, empty elsewhere) or this rank's shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if sharded:
            return get_model_state_dict(module)
        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_model_state_dict(self, module: nn.Module, state: dict[str, Any]) -> None:
        """Load full weights into the sharded ``module`` (each rank keeps its shards), or, while a sharded
        checkpoint is being restored, read this rank's shards from its directory (``state`` is unused)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

        if self._pending_sharded is not None:
            import torch.distributed.checkpoint as dcp

            shards = get_model_state_dict(module)
            dcp.load({"model": shards}, checkpoint_id=self._pending_sharded)
            set_model_state_dict(module, shards)
            return
        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state_dict(self, module: nn.Module, optimizer: Any, sharded: bool = False) -> dict[str, Any]:
        """Full in torch's indexed layout (rank zero), or this rank's shards keyed by parameter name."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        if sharded:
            return get_optimizer_state_dict(module, optimizer)
        state = get_optimizer_state_dict(
            module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return _indexed(state) if state else {}

    def load_optimizer_state_dict(
        self, module: nn.Module, optimizer: Any, state: dict[str, Any], index: int = 0
    ) -> None:
        """Load a full optimizer state (torch's indexed layout) into the sharded optimizer, or, while a
        sharded checkpoint is being restored, this rank's shards of optimizer ``index`` from its directory."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        if self._pending_sharded is not None:
            import torch.distributed.checkpoint as dcp

            shards = get_optimizer_state_dict(module, optimizer)
            dcp.load({"optimizers": {str(index): shards}}, checkpoint_id=self._pending_sharded)
            set_optimizer_state_dict(module, optimizer, shards)
            return
        named = _named(state, module, optimizer)
        set_optimizer_state_dict(module, optimizer, named, options=StateDictOptions(full_state_dict=True))

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
        if not checkpoint.get("sharded"):
            super().save_checkpoint(checkpoint, path)
            return
        import torch.distributed.checkpoint as dcp

        from ember.checkpoint import save_checkpoint

        target = os.path.abspath(os.fspath(path))
        token = self.broadcast(uuid.uuid4().hex if self.is_global_zero else None)
        tmp = f"{target}.tmp-{token}"
        plain = dict(checkpoint)
        tensors = {
            "model": plain.pop("state_dict"),
            "optimizers": {str(i): s for i, s in enumerate(plain.pop("optimizer_states", []))},
        }
        plain["sharded"] = {"format": "torch.distributed.checkpoint", "optimizers": len(tensors["optimizers"])}
        dcp.save(tensors, checkpoint_id=tmp)
        if self.is_global_zero:
            save_checkpoint(plain, os.path.join(tmp, _META_FILE))
        self.barrier()
        if self.is_global_zero:
            _replace_dir(tmp, target, token)
        self.barrier()

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
        """Read a single-file checkpoint as :class:`~ember.runtime.base.Strategy` does, or a sharded one (a
        directory; only with ``trusted_sharded_checkpoints=True``): its plain entries now, its weights and
        optimizer shards when they are loaded into the sharded module and optimizers."""
        if not os.path.isdir(path):
            self._pending_sharded = None
            return super().load_checkpoint(path, map_location)
        from ember.checkpoint import load_checkpoint

        name = os.fspath(path)
        if not self.trusted_sharded_checkpoints:
            raise ValueError(
                f"{name!r} is a sharded checkpoint: torch reads its metadata with pickle, which can run code. "
                "Load it only if you trust where it came from, with FSDPStrategy(trusted_sharded_checkpoints=True)"
            )
        meta = os.path.join(name, _META_FILE)
        if not os.path.isfile(meta):
            raise ValueError(f"{name!r} is a directory but not an Ember sharded checkpoint (no {_META_FILE})")
        checkpoint = load_checkpoint(meta, map_location=map_location)
        checkpoint["state_dict"] = {}
        checkpoint["optimizer_states"] = [{} for _ in range(checkpoint.get("sharded", {}).get("optimizers", 0))]
        self._pending_sharded = name
        return checkpoint

    def restored(self) -> None:
        """The checkpoint being restored is fully read."""
        self._pending_sharded = None


def _indexed(state: dict[str, Any]) -> dict[str, Any]:
    """A full optimizer state keyed by parameter name, in torch's layout keyed by position."""
    order = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**group, "params": [index[n] for n in group["params"]]} for group in state["param_groups"]],
    }


def _named(state: dict[str, Any], module: nn.Module, optimizer: Any) -> dict[str, Any]:
    """The reverse of :func:`_indexed` for ``optimizer``'s parameters of ``module``."""
    names = {id(p): n for n, p in module.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    if len(order) != sum(len(g["params"]) for g in state["param_groups"]):
        raise ValueError("the checkpoint's optimizer state has a different number of parameters than the optimizer")
    return {
        "state": {order[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [order[int(i)] for i in group["params"]]} for group in state["param_groups"]
        ],
    }


def _replace_dir(tmp: str, target: str, token: str) -> None:
    """Put the finished directory ``tmp`` at ``target``: a crash leaves the old one (perhaps under
    ``<target>.old-<token>``) or the new one, never a half-written one at ``target``."""
    old = f"{target}.old-{token}"
    if os.path.exists(target):
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
