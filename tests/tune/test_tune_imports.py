"""Optional dependencies: ``import ember`` and ``import ember.tune`` load neither Optuna nor
matplotlib, and a missing Optuna says which extra to install."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import ember, ember.tune
heavy = ("optuna", "matplotlib", "sqlalchemy", "redis", "psycopg2")
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in heavy))
sys.modules["optuna"] = None  # from here on, as if Optuna were not installed
try:
    ember.tune.optimize(lambda trial: 0.0, n_trials=1)
except ImportError as err:
    print("error:", err)
"""


def test_tune_dependencies_load_lazily_and_a_missing_optuna_names_the_extra():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout
    assert 'error: ember.tune needs Optuna, which is not installed: pip install "ember[tune]"' in out.stdout
