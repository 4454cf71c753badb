"""Ember: a PyTorch training framework — ``Module`` + ``Trainer`` on top of an event ``Engine``.

High level (Lightning's names)::

    trainer = ember.Trainer(max_epochs=5)
    trainer.fit(model, train_loader, val_loader)

Low level (Ignite's names)::

    from ember.engine import Engine, Events
"""

from ember.callbacks import Callback
from ember.datamodule import DataModule
from ember.engine import Engine, Events
from ember.module import Module
from ember.seed import seed_everything
from ember.trainer import Trainer
from ember.version import __version__

__all__ = ["Callback", "DataModule", "Engine", "Events", "Module", "Trainer", "__version__", "seed_everything"]
