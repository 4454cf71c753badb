"""``ember fit|validate|test|predict``: a Trainer, a model and data built from a config file and
command-line overrides (``--trainer.max_epochs 3``, ``--model.init_args.lr 0.01``), on jsonargparse.

Model and data are given by class path (``class_path: mypkg.MyModel`` + ``init_args``), so users'
own classes work; the current directory is importable, as with ``python -m``.
``--print_config`` prints the complete resolved configuration and exits; ``ember fit`` writes it,
with the seed it used (a random one when none is given), to ``config.yaml`` in the run's log folder,
and ``ember fit --config <that file>`` runs the same training again.
A user error (a bad option or config file, a missing checkpoint, a model without the step a
subcommand runs) ends in one ``ember: error: ...`` line and exit status 2.
``ember export`` and ``ember serve`` work on a trained model (see ``ember.export.cli``, ``ember.serve.cli``);
``ember tune`` searches a run's hyperparameters with Optuna and ``ember lr_find`` runs the learning-rate
range test, both taking the run as ``fit`` does (see ``ember.tune.cli``, ``ember.tune.lr_find_cli``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

SUBCOMMANDS = {
    "fit": "Train a model (with validation when the data provides it).",
    "validate": "Run one validation pass.",
    "test": "Run one test pass and print the results.",
    "predict": "Run predict_step over the predict data.",
}
#: Subcommands that work on a trained model rather than build a Trainer: name -> the module with
#: its ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(config)``.
TOOLS = {
    "export": "ember.export.cli",
    "serve": "ember.serve.cli",
    "tune": "ember.tune.cli",
    "lr_find": "ember.tune.lr_find_cli",
}


def _tool_parser(name: str) -> Any:
    import importlib

    from jsonargparse import ArgumentParser

    from ember.cli.help import HelpFormatter

    tool = importlib.import_module(TOOLS[name])
    parser = ArgumentParser(description=tool.DESCRIPTION, exit_on_error=False, formatter_class=HelpFormatter)
    tool.add_arguments(parser)
    return parser


def with_aliases(args: Sequence[str], aliases: dict[str, str]) -> list[str]:
    """``args`` with each option spelled as in ``aliases`` (``--n-trials 3``, ``--n-trials=3``) renamed."""
    out = []
    for arg in args:
        name, eq, value = arg.partition("=")
        out.append(aliases[name] + eq + value if name in aliases else arg)
    return out


def run_tool(args: Sequence[str]) -> Any:
    """Parse and run ``ember export|serve|tune|lr_find ...`` (``args`` starts with the subcommand)."""
    import importlib

    from jsonargparse import ArgumentError, ArgumentParser

    from ember.cli.help import HelpFormatter

    if os.getcwd() not in sys.path:  # users' classes, as for ember fit
        sys.path.insert(0, os.getcwd())
    tool = importlib.import_module(TOOLS[args[0]])
    args = with_aliases(args, getattr(tool, "ALIASES", {}))
    check_config_files(args)
    parser = ArgumentParser(prog="ember", exit_on_error=False, formatter_class=HelpFormatter)
    subcommands = parser.add_subcommands(dest="subcommand", required=True)
    try:
        subcommands.add_subcommand(args[0], _tool_parser(args[0]))
        config = parser.parse_args(list(args))
        return tool.run(config[args[0]])
    except (ArgumentError, ValueError, TypeError, OSError, ImportError) as err:
        raise ConfigError(str(err)) from err


def _stage_parser(name: str) -> Any:
    from jsonargparse import ArgumentParser

    from ember.cli.help import HelpFormatter

    parser = ArgumentParser(description=SUBCOMMANDS[name], exit_on_error=False, formatter_class=HelpFormatter)
    add_run_arguments(parser, ckpt_path=True)
    if name == "predict":
        from ember.callbacks.prediction_files import FORMATS

        parser.add_argument(
            "--output",
            type=str | None,
            default=None,
            help=f"Write the predictions to this file ({', '.join(FORMATS)}; see docs/cli.md); without it they are counted only.",
        )
        parser.add_argument("--overwrite", type=bool, default=False, help="Replace an existing --output file.")
    return parser


def add_run_arguments(parser: Any, ckpt_path: bool = False) -> None:
    """The arguments ``fit`` and the commands that build the same run take (``tune``, ``lr_find``):
    ``--config``, ``--seed_everything``, ``--trainer.*``, ``--model``, ``--data`` (and ``--ckpt_path``)."""
    import torch
    from jsonargparse import ActionConfigFile

    from ember.datamodule import DataModule
    from ember.trainer import Trainer

    parser.add_argument("--config", action=ActionConfigFile, help="A YAML config file (several may be given; later ones win).")
    parser.add_argument("--seed_everything", type=int | None, default=None, help="Seed every RNG with this value.")
    if ckpt_path:
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help='A checkpoint to continue from (fit) or to load: a path, "last" or "best".'
        )
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False, sub_configs=True)
    parser.add_subclass_arguments(
        torch.nn.Module, "model", required=True, help="The model: a class path (e.g. mypkg.MyModel) and its init_args."
    )
    parser.add_subclass_arguments(
        DataModule, "data", required=False, help="The data: an ember.DataModule's class path and its init_args."
    )
    titles = {"trainer": "Trainer (ember.Trainer)", "model": "Model (a torch.nn.Module)", "data": "Data (an ember.DataModule)"}
    for key, title in titles.items():  # the classes' first docstring lines make poor headings
        parser.groups[key].title = title


def build_parser(stage_parsers: dict[str, Any] | None = None) -> Any:
    """The ``ember`` argument parser with one subcommand per Trainer entry point (``stage_parsers``:
    the subcommands' parsers to use, by name; built here when not given)."""
    from jsonargparse import ArgumentParser

    from ember.cli.help import HelpFormatter
    from ember.version import __version__

    parser = ArgumentParser(
        prog="ember",
        description="Ember: train, evaluate and predict with PyTorch models.",
        exit_on_error=False,
        formatter_class=HelpFormatter,  # jsonargparse gives it to the subcommands' parsers too
    )
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    subcommands = parser.add_subcommands(dest="subcommand", required=True)
    for name in SUBCOMMANDS:
        stage_parser = (stage_parsers or {}).get(name) or _stage_parser(name)
        subcommands.add_subcommand(name, stage_parser, help=SUBCOMMANDS[name])
    for name in TOOLS:
        tool_parser = _tool_parser(name)
        subcommands.add_subcommand(name, tool_parser, help=tool_parser.description)
    return parser


class ConfigError(ValueError):
    """The command line or config file asked for something invalid (raised before any training)."""


class EmberCLI:
    """Parses arguments, builds the Trainer, model and datamodule, and (with ``run=True``) runs the
    subcommand. Afterwards ``trainer``, ``model``, ``datamodule``, ``config`` and ``result`` are set.

    Example (a script that fits, then tests the same model)::

        cli = EmberCLI(["fit", "--config", "config.yaml"])
        cli.trainer.test(cli.model, datamodule=cli.datamodule)
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        from jsonargparse import ArgumentError

        self.stage_parsers = {name: _stage_parser(name) for name in SUBCOMMANDS}
        self.parser = build_parser(self.stage_parsers)
        argv = list(sys.argv[1:] if args is None else args)
        check_config_files(argv)
        try:
            self.config = self.parser.parse_args(argv)
            self.subcommand: str = self.config.subcommand
            stage_config = self.config[self.subcommand]
            if stage_config.get("seed_everything") is None and self.subcommand == "fit":
                stage_config.seed_everything = random_seed()  # recorded in config.yaml: the run can be repeated
            if stage_config.get("seed_everything") is not None:
                from ember.seed import seed_everything

                seed_everything(stage_config.seed_everything)
            init = self.parser.instantiate(self.config)[self.subcommand]
        except (ArgumentError, ValueError, TypeError) as err:
            raise ConfigError(str(err)) from err
        self.trainer = init.trainer
        self.model = init.model
        self.datamodule = init.get("data")
        self.result: Any = None
        check_stage(self.subcommand, self.model, stage_config.get("ckpt_path"))
        if self.subcommand == "fit":
            from ember.cli.save_config import SaveConfigCallback

            self.trainer.callbacks.append(SaveConfigCallback(self.dump_config()))
        self.prediction_writer = prediction_writer(stage_config) if self.subcommand == "predict" else None
        if self.prediction_writer is not None:
            self.trainer.callbacks.append(self.prediction_writer)
        if run:
            self.run()

    def dump_config(self) -> str:
        """The subcommand's fully resolved configuration as YAML (what ``--config`` reads back)."""
        stage_config = self.config[self.subcommand].clone()
        stage_config.pop("config", None)
        return self.stage_parsers[self.subcommand].dump(stage_config, skip_unset=False)

    def run(self) -> Any:
        """Run the subcommand (``trainer.fit/validate/test/predict``) with the parsed ``--ckpt_path``;
        ``predict`` then reports its batches and where ``--output`` wrote them. Returns (and keeps in
        ``result``) what the Trainer returned."""
        from ember.callbacks.prediction_files import PredictionFormatError

        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        try:
            self.result = getattr(self.trainer, self.subcommand)(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        except PredictionFormatError as err:  # --output's format does not fit the predictions: the user's to choose
            raise ConfigError(f"--output {self.prediction_writer.path!r}: {err}") from err
        if self.subcommand == "predict" and self.trainer.is_global_zero:
            report_predictions(self.result, self.trainer, self.prediction_writer)
        return self.result


def prediction_writer(stage_config: Any) -> Any:
    """``ember predict --output FILE``: the callback that writes the predictions there (None without
    ``--output``); a path that cannot be written is refused now, before anything runs."""
    output = stage_config.get("output")
    if output is None:
        return None
    from ember.callbacks.prediction_files import PredictionFileWriter, check_output_path

    try:
        check_output_path(output, overwrite=bool(stage_config.get("overwrite")), allow="--overwrite true")
    except ValueError as err:
        raise ConfigError(f"--{err}") from None
    return PredictionFileWriter(output, overwrite=bool(stage_config.get("overwrite")))


def report_predictions(result: Any, trainer: Any, writer: Any) -> None:
    """One line after ``ember predict``: how many batches were predicted and where they went."""
    several = len(trainer.num_predict_batches) > 1
    batches = sum(len(r) for r in result) if several else len(result or [])
    if writer is not None:  # (written by other processes, when they ran the stage: one file each)
        where = writer.written or f"{writer.path} (one file per process: NAME.rankR.EXT)"
        print(f"ember predict: {batches} batches of predictions written to {where}")
    else:
        print(f"ember predict: {batches} batches predicted (give --output FILE.pt|.jsonl|.csv to keep them)")


def random_seed() -> int:
    """A fresh seed for a run given none (as LightningCLI's ``seed_everything: true``)."""
    return int.from_bytes(os.urandom(4), "little")


#: what each subcommand calls on the model (checked before anything runs)
STAGE_METHODS = {
    "fit": ("training_step", "configure_optimizers"),
    "validate": ("validation_step",),
    "test": ("test_step",),
    "predict": (),
}


def check_stage(subcommand: str, model: Any, ckpt_path: Any) -> None:
    """Refuse, as a :class:`ConfigError`, a model without the method ``subcommand`` runs and a
    ``--ckpt_path`` file that is not there, before anything runs."""
    from ember.trainer.stages import check_model

    try:
        check_model(model, subcommand, STAGE_METHODS[subcommand])
    except TypeError as err:
        raise ConfigError(f"{err}; choose a subcommand the model supports or give --model a class that defines it") from None
    if subcommand == "predict" and not callable(getattr(model, "predict_step", None)):
        raise ConfigError(f"{type(model).__name__} cannot be used with ember predict: it does not define predict_step()")
    if isinstance(ckpt_path, str) and ckpt_path not in ("last", "best") and "://" not in ckpt_path:
        if not os.path.exists(ckpt_path):
            raise ConfigError(f'--ckpt_path {ckpt_path!r}: no such file (give a checkpoint\'s path, "last" or "best")')


def check_config_files(argv: Sequence[str]) -> None:
    """Parse every ``--config`` file given in ``argv`` as YAML first, so that a syntax error names
    the file, the line and the column (jsonargparse would report an anonymous string)."""
    import yaml

    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in paths:
        if not os.path.isfile(path):
            continue  # a YAML string, or a missing file: jsonargparse says so
        try:
            with open(path, encoding="utf-8") as f:
                yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"config file {path!r} is not valid YAML{where}: {problem}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path!r} cannot be read: {err}") from None


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``ember`` console script; returns the exit status (2 for a user error,
    reported as one ``ember: error: ...`` line)."""
    from ember.checkpoint.io import CheckpointError

    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in TOOLS:
            status = run_tool(argv)
            if isinstance(status, int) and not isinstance(status, bool):  # ember tune reports its own status
                return status
        else:
            EmberCLI(argv)
    except (ConfigError, CheckpointError) as err:  # a checkpoint that cannot be used is the user's to fix too
        print(f"ember: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    return 0


def one_line(message: str) -> str:
    """``message`` with its lines joined (an error is reported on one line)."""
    return "; ".join(part for line in message.splitlines() if (part := " ".join(line.split())))


if __name__ == "__main__":
    sys.exit(main())
