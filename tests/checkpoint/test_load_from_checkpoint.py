"""``Module.load_from_checkpoint``: rebuilt from the saved hyperparameters, weights assigned without a
random initialisation first, non-persistent buffers and tied weights right, ``torch.compile``d
submodules, ``map_location``, and hyperparameters that could not be saved."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import ember
from ember.checkpoint import CheckpointError, new_checkpoint, save_checkpoint

# torch.compile imports TorchScript internals that warn about their own deprecation
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def save(model: nn.Module, path: Path) -> Path:
    ckpt = {**new_checkpoint(), "state_dict": model.state_dict()}
    hparams = getattr(model, "hparams", None)
    if hparams:
        ckpt["hyper_parameters"] = dict(hparams)
    save_checkpoint(ckpt, path)
    return path


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class MLP(ember.Module):
    def __init__(self, width: int = 8, depth: int = 2, lr: float = 0.1, act: str = "tanh") -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.Tanh() if act == "tanh" else nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.norm = nn.BatchNorm1d(width)  # persistent buffers: running stats
        self.loaded_hook_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loaded_hook_calls += 1


def test_rebuilds_from_hyperparameters_with_equal_weights(tmp_path: Path) -> None:
    model = MLP(width=6, depth=3, act="relu")
    model.norm.running_mean.fill_(0.5)
    path = save(model, tmp_path / "m.ckpt")
    loaded = MLP.load_from_checkpoint(path)
    assert dict(loaded.hparams) == {"width": 6, "depth": 3, "lr": 0.1, "act": "relu"}
    assert same_weights(loaded, model)
    assert isinstance(loaded.net[1], nn.ReLU) and len(loaded.net) == 6
    assert loaded.loaded_hook_calls == 1
    assert all(not t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    x = torch.randn(4, 6)
    model.eval()
    loaded.eval()
    assert torch.equal(loaded(x), model(x))
    # the loaded parameters are ordinary leaf parameters that train
    loss = loaded(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in loaded.parameters())


def test_hparam_overrides_win(tmp_path: Path) -> None:
    path = save(MLP(width=6), tmp_path / "m.ckpt")
    loaded = MLP.load_from_checkpoint(path, lr=0.5, act="tanh")
    assert loaded.hparams.lr == 0.5 and loaded.hparams.width == 6
    with pytest.raises(CheckpointError, match=r"(?s)m\.ckpt' does not fit MLP: .*size mismatch"):
        MLP.load_from_checkpoint(path, width=7)


def test_no_random_initialisation_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(MLP(width=16, depth=4), tmp_path / "m.ckpt")
    real_inits: list[tuple[int, ...]] = []
    original = nn.init.kaiming_uniform_

    def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not tensor.is_meta:
            real_inits.append(tuple(tensor.shape))
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_uniform_", counting)
    MLP(width=16, depth=4)
    assert len(real_inits) == 4  # the counter sees an ordinary construction
    real_inits.clear()
    loaded = MLP.load_from_checkpoint(path)
    assert real_inits == []
    assert not any(p.is_meta for p in loaded.parameters())


class WithFrequencies(ember.Module):
    """Computes a non-persistent buffer in __init__ (not in the state dict)."""

    def __init__(self, n: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.proj = nn.Linear(n, n)
        self.register_buffer(
            "freqs", torch.exp(torch.arange(n, dtype=torch.float32) * -math.log(100.0) / n), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.freqs


def test_a_non_persistent_buffer_computed_in_init_comes_out_right(tmp_path: Path) -> None:
    model = WithFrequencies(8)
    path = save(model, tmp_path / "f.ckpt")
    assert "freqs" not in torch.load(path, weights_only=True)["state_dict"]
    loaded = WithFrequencies.load_from_checkpoint(path)
    assert not loaded.freqs.is_meta
    assert torch.equal(loaded.freqs, model.freqs)
    assert same_weights(loaded, model)
    x = torch.randn(2, 8)
    assert torch.equal(loaded(x), model(x))


class TiedLM(ember.Module):
    def __init__(self, vocab: int = 12, dim: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    model = TiedLM()
    path = save(model, tmp_path / "t.ckpt")
    loaded = TiedLM.load_from_checkpoint(path)
    assert loaded.out.weight is loaded.emb.weight
    assert len(list(loaded.parameters())) == len(list(model.parameters())) == 1
    assert same_weights(loaded, model)


class Encoder(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.l1 = nn.Linear(dim, dim)
        self.l2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1(x)))


class CompiledNet(ember.Module):
    def __init__(self, dim: int = 4, backend: str = "inductor") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = torch.compile(Encoder(dim), backend=backend)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class PlainNet(ember.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = Encoder(dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def test_a_compiled_submodule_saves_and_loads(tmp_path: Path) -> None:
    model = CompiledNet(4)
    path = save(model, tmp_path / "c.ckpt")
    assert "encoder._orig_mod.l1.weight" in torch.load(path, weights_only=True)["state_dict"]
    loaded = CompiledNet.load_from_checkpoint(path, backend="eager")  # eager: no C++ compile in the test
    assert type(loaded.encoder) is type(torch.compile(nn.Linear(1, 1)))  # still compiled
    assert same_weights(loaded, model)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), PlainNet.load_from_checkpoint(path)(x))


def test_weights_move_between_compiled_and_plain_modules(tmp_path: Path) -> None:
    compiled = CompiledNet(4, backend="eager")
    plain = PlainNet.load_from_checkpoint(save(compiled, tmp_path / "c.ckpt"))
    assert "encoder.l1.weight" in plain.state_dict()
    assert torch.equal(plain.encoder.l1.weight, compiled.encoder._orig_mod.l1.weight)
    plain2 = PlainNet(4)
    back = CompiledNet.load_from_checkpoint(save(plain2, tmp_path / "p.ckpt"), backend="eager")
    assert torch.equal(back.encoder._orig_mod.l2.bias, plain2.encoder.l2.bias)
    assert torch.equal(back.head.weight, plain2.head.weight)
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(back(x), plain2(x))


def test_resume_into_a_compiled_module_from_a_plain_run(tmp_path: Path) -> None:
    """The Trainer's own restore handles the prefix too (fit/test with ckpt_path)."""
    from torch.utils.data import DataLoader, TensorDataset

    class Trainable(PlainNet):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return nn.functional.mse_loss(self(batch[0]), batch[1])

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("test_loss", nn.functional.mse_loss(self(batch[0]), batch[1]))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=4)
    model = Trainable(4)
    trainer = ember.Trainer(enable_progress_bar=False, enable_model_summary=False, logger=False,
                            enable_checkpointing=False, default_root_dir=tmp_path, max_epochs=1)  # fmt: skip
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    other = Trainable(4)
    other.encoder = torch.compile(other.encoder, backend="eager")
    trainer.test(other, data, ckpt_path=tmp_path / "plain.ckpt", verbose=False)
    assert torch.equal(other.encoder._orig_mod.l1.weight, model.encoder.l1.weight)


def test_map_location(tmp_path: Path) -> None:
    model = MLP()
    path = save(model, tmp_path / "m.ckpt")
    for location in ("cpu", torch.device("cpu"), {"cpu": "cpu"}, lambda storage, loc: storage):
        loaded = MLP.load_from_checkpoint(path, map_location=location)
        assert all(p.device.type == "cpu" for p in loaded.parameters())
        assert same_weights(loaded, model)
    path = save(WithFrequencies(), tmp_path / "f.ckpt")  # rebuilt for real (a non-persistent buffer)
    for location in ("cpu", {"cpu": "cpu"}, lambda storage, loc: storage):
        loaded = WithFrequencies.load_from_checkpoint(path, map_location=location)
        assert loaded.freqs.device.type == "cpu" and loaded.proj.weight.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_map_location_cuda(tmp_path: Path) -> None:
    model = WithFrequencies()
    loaded = WithFrequencies.load_from_checkpoint(save(model, tmp_path / "f.ckpt"), map_location="cuda")
    assert loaded.proj.weight.is_cuda and loaded.freqs.is_cuda
    loaded = MLP.load_from_checkpoint(save(MLP(), tmp_path / "m.ckpt"), map_location="cuda")
    assert all(t.is_cuda for t in [*loaded.parameters(), *loaded.buffers()])


class WithBackbone(ember.Module):
    def __init__(self, backbone: nn.Module, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = backbone
        self.head = nn.Linear(4, 1)


def test_a_non_plain_hyperparameter_is_left_out_and_must_be_passed_again(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="'backbone'") as record:
        model = WithBackbone(nn.Linear(4, 4), lr=0.3)
    assert any("load_from_checkpoint" in str(w.message) for w in record)
    assert dict(model.hparams) == {"lr": 0.3}
    path = save(model, tmp_path / "b.ckpt")
    assert torch.load(path, weights_only=True)["hyper_parameters"] == {"lr": 0.3}
    with pytest.raises(CheckpointError, match=r"b\.ckpt' cannot build WithBackbone: missing .*'backbone'"):
        WithBackbone.load_from_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = WithBackbone.load_from_checkpoint(path, backbone=nn.Linear(4, 4))
    assert loaded.hparams.lr == 0.3
    assert same_weights(loaded, model)


def test_strict_false_keeps_missing_weights_initialised(tmp_path: Path) -> None:
    model = MLP(width=4, depth=1)
    ckpt = {**new_checkpoint(), "state_dict": {k: v for k, v in model.state_dict().items() if not k.startswith("norm")},
            "hyper_parameters": dict(model.hparams)}  # fmt: skip
    save_checkpoint(ckpt, tmp_path / "part.ckpt")
    with pytest.raises(CheckpointError, match=r"(?s)part\.ckpt' does not fit MLP: .*Missing key"):
        MLP.load_from_checkpoint(tmp_path / "part.ckpt")
    loaded = MLP.load_from_checkpoint(tmp_path / "part.ckpt", strict=False)
    assert torch.equal(loaded.net[0].weight, model.net[0].weight)
    assert torch.equal(loaded.norm.weight, torch.ones(4)) and not loaded.norm.running_var.is_meta


def test_a_plain_file_without_weights(tmp_path: Path) -> None:
    save_checkpoint(new_checkpoint(), tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match="state_dict"):
        MLP.load_from_checkpoint(tmp_path / "empty.ckpt")


def test_example_input_array_is_a_real_tensor_after_loading(tmp_path) -> None:
    import torch
    from torch import nn

    import ember

    class WithExample(ember.Module):
        def __init__(self, width: int = 3):
            super().__init__()
            self.save_hyperparameters()
            self.lin = nn.Linear(width, 2)
            self.example_input_array = torch.zeros(1, width, dtype=torch.float32)

        def forward(self, x):
            return self.lin(x)

    original = WithExample(width=5)
    trainer = ember.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.model = original
    trainer.save_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    loaded = WithExample.load_from_checkpoint(tmp_path / "m.ckpt")
    assert not loaded.example_input_array.is_meta
    assert loaded.example_input_array.shape == (1, 5) and loaded.example_input_array.dtype == torch.float32
    assert torch.equal(loaded(loaded.example_input_array), original(torch.zeros(1, 5)))
