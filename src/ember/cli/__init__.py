"""The ``ember`` command: ``ember fit|validate|test|predict --config FILE.yaml``."""

from ember.cli.main import ConfigError, EmberCLI, main

__all__ = ["ConfigError", "EmberCLI", "main"]
