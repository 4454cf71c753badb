"""Hyperparameter search with Optuna, and a learning-rate finder.

- :func:`optimize`: run or join an Optuna study over a function ``trial -> float`` or an
  ``ember fit`` config plus a search space (``ember tune`` on the command line); each trial in its
  own directory, failures recorded, any number of processes sharing one study through SQLite,
  PostgreSQL or Redis (:func:`open_storage`).
- :class:`PruningCallback`: report a validation metric to a trial and prune it early.
- :func:`lr_find` / :class:`Tuner`: the learning-rate range test.

Optuna and matplotlib are imported only when used (``pip install "ember[tune]"``).
"""

from ember.tune.lr_finder import LRFinder, Tuner, lr_find
from ember.tune.pruning import PruningCallback
from ember.tune.report import format_results, plot_figures, save_plots
from ember.tune.space import Param, load_space
from ember.tune.storage import StorageConnectionError, open_storage
from ember.tune.study import TrialResult, best_result, optimize, record_run, trial_dir, trial_results

__all__ = [
    "LRFinder",
    "Param",
    "PruningCallback",
    "StorageConnectionError",
    "TrialResult",
    "Tuner",
    "best_result",
    "format_results",
    "load_space",
    "lr_find",
    "open_storage",
    "optimize",
    "plot_figures",
    "record_run",
    "save_plots",
    "trial_dir",
    "trial_results",
]
