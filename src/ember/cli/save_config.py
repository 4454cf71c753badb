"""``config.yaml`` in the run's log folder: the fully resolved configuration of an ``ember fit`` run
(class paths, every Trainer setting, the seed), as LightningCLI writes it, so that
``ember fit --config <log_dir>/config.yaml`` runs the same thing again."""

from __future__ import annotations

import os
from typing import Any

from ember.callbacks.callback import Callback
from ember.io.atomic import atomic_write_text

CONFIG_NAME = "config.yaml"


def config_path(log_dir: str, text: str) -> str:
    """Where ``text`` goes in ``log_dir``: ``config.yaml``, or (when a different one is there already,
    e.g. from a run continued there with other settings) ``config-v1.yaml``, ``config-v2.yaml``, ..."""
    stem, ext = os.path.splitext(CONFIG_NAME)
    candidate, n = os.path.join(log_dir, CONFIG_NAME), 0
    while os.path.exists(candidate):
        try:
            with open(candidate, encoding="utf-8") as f:
                if f.read() == text:
                    return candidate
        except OSError:
            pass
        n += 1
        candidate = os.path.join(log_dir, f"{stem}-v{n}{ext}")
    return candidate


class SaveConfigCallback(Callback):
    """Writes ``text`` (the resolved config, as YAML) into ``trainer.log_dir`` when ``fit`` starts,
    on rank zero only. ``path`` is the file written (None before)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.path: str | None = None

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.path is not None:
            return
        log_dir = os.fspath(trainer.log_dir)
        path = config_path(log_dir, self.text)
        if not os.path.exists(path):
            atomic_write_text(path, self.text)
        self.path = path
