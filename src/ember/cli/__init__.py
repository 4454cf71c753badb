"""The ``ember`` command: ``ember fit|validate|test|predict --config FILE.yaml``."""

from ember.cli.main import EmberCLI, main

__all__ = ["EmberCLI", "main"]
