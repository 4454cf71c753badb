"""The public surface of ``ember``, one copy of every class, a cheap import, and no private
PyTorch API anywhere under ``src/``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ember

SRC = Path(__file__).resolve().parent.parent / "src"

# ``torch._C``, ``torch._dynamo``, ... and private submodules such as ``torch.utils._pytree``
PRIVATE_TORCH = re.compile(r"\btorch(?:\.[A-Za-z]\w*)*\._[A-Za-z]")
# ``from torch import _C`` / ``from torch.utils import _pytree``
PRIVATE_TORCH_FROM_IMPORT = re.compile(
    r"^\s*from\s+torch(?:\.\w+)*\s+import\s+(?:\(?\s*)?(?:[\w\s,]*,\s*)?_[A-Za-z]", re.M
)


def private_torch_uses(text: str) -> list[str]:
    """Lines of ``text`` that use private PyTorch API."""
    hits = [m.group(0) for m in PRIVATE_TORCH.finditer(text)]
    hits += [m.group(0).strip() for m in PRIVATE_TORCH_FROM_IMPORT.finditer(text)]
    return hits


@pytest.mark.parametrize(
    "name", ["Module", "Trainer", "DataModule", "Callback", "Engine", "Events", "seed_everything", "__version__"]
)
def test_top_level_names(name):
    assert hasattr(ember, name)
    assert name in ember.__all__


def test_one_copy_of_each_class():
    from ember.callbacks.callback import Callback
    from ember.datamodule import DataModule
    from ember.engine import Engine, Events
    from ember.module import Module
    from ember.seed import seed_everything
    from ember.trainer import Trainer

    assert ember.Module is Module and ember.Trainer is Trainer and ember.DataModule is DataModule
    assert ember.Callback is Callback and ember.Engine is Engine and ember.Events is Events
    assert ember.seed_everything is seed_everything
    assert ember.Module.__module__ == "ember.module"


def test_subpackages_export_their_public_names():
    from ember import callbacks, loggers

    assert {"Callback", "ModelSummary", "ProgressBar"} <= set(callbacks.__all__)
    assert {"CSVLogger", "Logger"} <= set(loggers.__all__)


def test_py_typed_is_shipped():
    assert (SRC / "ember" / "py.typed").exists()


# Optional integrations and heavy libraries: imported inside the function that needs them (DESIGN.md)
LAZY = (
    "tqdm",
    "jsonargparse",
    "tensorboard",
    "mlflow",
    "optuna",
    "onnx",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "sklearn",
    "torchmetrics",
    "pandas",
    "scipy",
    "matplotlib",
)


def test_import_ember_imports_nothing_heavy_beyond_torch():
    code = (
        "import sys, torch; before = set(sys.modules); import ember; "
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported = set(out.split())
    assert "ember" in imported
    assert imported.isdisjoint(LAZY), sorted(imported & set(LAZY))


def test_the_private_api_scanner_catches_what_it_should():
    bad = [
        "x = torch._C._get_tracing_state()",
        "from torch._dynamo import config",
        "import torch._inductor",
        "torch._foreach_add_(a, b)",
        "from torch.utils._pytree import tree_map",
        "from torch import _C",
        "from torch.utils import data, _pytree",
    ]
    for line in bad:
        assert private_torch_uses(line), line
    good = [
        "torch.nn.functional.relu(x)",
        "torch.autocast('cpu')",
        "from torch.utils.data import DataLoader",
        "torch.amp.GradScaler('cuda')",
        "x._private = 1; torch_._x = 2",
    ]
    for line in good:
        assert not private_torch_uses(line), line


def test_src_uses_no_private_pytorch_api():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the scan really looks at the package
    offenders = {
        str(path.relative_to(SRC)): hits
        for path in files
        if (hits := private_torch_uses(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, f"private PyTorch API used (DESIGN.md: public API only): {offenders}"
