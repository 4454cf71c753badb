"""Search spaces: parsing, sampling and the errors for bad specs."""

from __future__ import annotations

import optuna
import pytest

from ember.tune import load_space
from ember.tune.space import nested_overrides


def test_float_int_and_categorical_specs_sample_within_their_ranges(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "model.init_args.lr: {type: float, low: 1e-5, high: 1e-1, log: true}\n"  # PyYAML reads 1e-5 as a string
        "model.init_args.dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}\n"
        "model.init_args.channels: {type: int, low: 16, high: 64, step: 16}\n"
        "data.init_args.batch_size: {type: categorical, choices: [32, 64, 128]}\n"
    )
    space = load_space(path)
    assert space["model.init_args.lr"].low == 1e-5 and space["model.init_args.lr"].log
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {name: p.suggest(trial) for name, p in space.items()}
        assert 1e-5 <= values["model.init_args.lr"] <= 1e-1
        assert round(values["model.init_args.dropout"] * 10) == pytest.approx(values["model.init_args.dropout"] * 10)
        assert values["model.init_args.channels"] in (16, 32, 48, 64)
        assert values["data.init_args.batch_size"] in (32, 64, 128)
        study.tell(trial, 0.0)


def test_nested_overrides_builds_a_config_fragment():
    assert nested_overrides({"model.init_args.lr": 0.1, "model.init_args.width": 4, "trainer.max_epochs": 2}) == {
        "model": {"init_args": {"lr": 0.1, "width": 4}},
        "trainer": {"max_epochs": 2},
    }
    with pytest.raises(ValueError, match="overlap"):
        nested_overrides({"model.init_args": 1, "model.init_args.lr": 0.1})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"lr": {"type": "uniformish", "low": 0, "high": 1}},
            "parameter 'lr' has unknown type 'uniformish'; use one of 'float', 'int', 'categorical'",
        ),
        ({"lr": {"low": 0, "high": 1}}, "unknown type None"),
        ({"lr": {"type": "float", "low": 1.0}}, "missing 'high'"),
        ({"lr": {"type": "float", "low": 2.0, "high": 1.0}}, "low=2.0 is above high=1.0"),
        ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log=true needs low > 0"),
        ({"lr": {"type": "float", "low": "abc", "high": 1.0}}, "low='abc' must be a number"),
        (
            {"lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1}},
            "cannot be combined with log=true",
        ),
        ({"n": {"type": "int", "low": 1.5, "high": 4}}, "low=1.5 must be an integer"),
        ({"n": {"type": "int", "low": 1, "high": 4, "step": 0}}, "step=0 must be a positive integer"),
        ({"n": {"type": "int", "low": 1, "high": 4, "choices": [1]}}, "unknown keys ['choices'] for type 'int'"),
        ({"opt": {"type": "categorical", "choices": []}}, "'choices' must be a non-empty list"),
        ({"opt": {"type": "categorical", "choices": [{"a": 1}]}}, "must be None, a bool, a number or a string"),
        ({"bad key!": {"type": "int", "low": 1, "high": 2}}, "is not a dotted config path"),
        ({"lr": 0.1}, "must be a mapping with a 'type'"),
        ({}, "is empty"),
    ],
)
def test_bad_specs_raise_errors_naming_the_parameter_and_problem(spec, message):
    with pytest.raises(ValueError) as info:
        load_space(spec)
    assert message in str(info.value)


def test_bad_space_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_space(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: {type: float, low: [\n")
    with pytest.raises(ValueError, match=r"broken\.yaml.*not valid YAML"):
        load_space(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- lr\n- wd\n")
    with pytest.raises(ValueError, match="must map dotted config paths"):
        load_space(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model.init_args.lr: {type: flaot, low: 0.001, high: 0.1}\n")
    with pytest.raises(
        ValueError, match=r"search space file '.*typo.yaml': parameter 'model.init_args.lr' has unknown type 'flaot'"
    ):
        load_space(typo)
