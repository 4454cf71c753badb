"""Utilities Lightning users import from ``lightning.pytorch.utilities``: ``CombinedLoader``."""

from ember.utilities.combined_loader import CombinedLoader

__all__ = ["CombinedLoader"]
