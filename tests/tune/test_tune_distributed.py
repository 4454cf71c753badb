"""Three worker processes at once on one study, in real PostgreSQL and real Redis (started by
``scripts/services.sh``): every trial recorded exactly once, none lost, numbers unique, and the
study's best value the best of all trials."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from tune_procs import ROOT, ember_command, subprocess_env
from tune_tiny import write_config

from ember.tune import open_storage

WORKERS = 3

# A worker whose first trial waits until every worker is inside its first trial, so the trials
# of the three processes really run at the same time.
PYTHON_WORKER = """
import json, os, sys, time, uuid
import optuna
import ember.tune
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, seed, n_trials, root, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
mine = []

def objective(trial):
    if not mine:
        open(os.path.join(root, f"ready-{seed}"), "w").close()
        deadline = time.monotonic() + 120
        while sum(f.startswith("ready-") for f in os.listdir(root)) < workers and time.monotonic() < deadline:
            time.sleep(0.01)
    x = trial.suggest_float("x", -10, 10)
    token = uuid.uuid4().hex
    trial.set_user_attr("token", token)
    trial.set_user_attr("pid", os.getpid())
    time.sleep(0.02)
    value = (x - 2) ** 2
    mine.append({"number": trial.number, "token": token, "value": value})
    return value

ember.tune.optimize(objective, n_trials=n_trials, storage=url, study_name=name, sampler="random", seed=seed, root_dir=root)
print("RESULT " + json.dumps(mine))
"""


def _check_study(url: str, name: str, expected: int, ran_by_worker: list[list[int]]) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.get_trials()
    assert len(trials) == expected, f"{len(trials)} trials recorded, {expected} run"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert sorted(t.number for t in trials) == list(range(expected))  # unique, none lost
    assert len({t._trial_id for t in trials}) == expected
    ran = [n for numbers in ran_by_worker for n in numbers]
    assert sorted(ran) == list(range(expected)), "each trial run by exactly one worker"
    assert all(len(numbers) == expected // WORKERS for numbers in ran_by_worker)
    values = [t.value for t in trials]
    assert study.best_value == min(values)
    assert study.best_trial.number == min(trials, key=lambda t: t.value).number
    return study


def test_three_python_workers_share_one_study_in_redis(redis_url, tmp_path):
    url, name, n_trials = redis_url, f"py-{uuid.uuid4().hex[:8]}", 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PYTHON_WORKER, url, name, str(seed), str(n_trials), str(tmp_path), str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        for seed in range(WORKERS)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        reports.append(json.loads(re.search(r"^RESULT (.*)$", out, re.M).group(1)))
    study = _check_study(url, name, WORKERS * n_trials, [[r["number"] for r in rep] for rep in reports])
    stored = {t.number: t for t in study.get_trials()}
    tokens = [r["token"] for rep in reports for r in rep]
    assert sorted(tokens) == sorted(t.user_attrs["token"] for t in stored.values())  # exactly once each
    for rep in reports:
        for r in rep:
            assert (
                stored[r["number"]].value == pytest.approx(r["value"])
                and stored[r["number"]].user_attrs["token"] == r["token"]
            )
    # the workers really ran at the same time: their trials interleave in time
    spans = {}
    for t in stored.values():
        start, end = spans.get(t.user_attrs["pid"], (t.datetime_start, t.datetime_complete))
        spans[t.user_attrs["pid"]] = (min(start, t.datetime_start), max(end, t.datetime_complete))
    assert len(spans) == WORKERS
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())


@pytest.fixture
def fresh_postgres_schema(postgres_url):
    """A URL for ``postgres_url`` whose tables go to a new, empty schema (dropped afterwards), so the
    workers also race to create Optuna's tables, as workers on a new database do."""
    import sqlalchemy

    schema = f"tune_{uuid.uuid4().hex[:12]}"
    admin = open_storage_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def open_storage_engine(url: str):
    import sqlalchemy

    return sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def test_three_ember_tune_commands_share_one_study_in_postgres(fresh_postgres_schema, tmp_path):
    url = fresh_postgres_schema
    config = write_config(tmp_path, max_epochs=2)
    space = tmp_path / "space.yaml"
    space.write_text("model.init_args.lr: {type: float, low: 1e-3, high: 0.3, log: true}\n")
    name, n_trials = "cli-study", 2
    args = ["tune", "--config", config, "--space", str(space), "--n-trials", str(n_trials), "--storage", url,
            "--study-name", name, "--root-dir", str(tmp_path / "runs"), "--sampler", "random", "--pruner", "none"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [ember_command(), *args, "--seed", str(seed)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        for seed in range(WORKERS)
    ]
    ran_by_worker = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, out + err
        assert "Best trial: #" in out
        line = re.search(r"^This process ran (\d+) trial\(s\): (.*)$", out, re.M)
        ran_by_worker.append([int(n) for n in re.findall(r"#(\d+)", line.group(2))])
    study = _check_study(url, name, WORKERS * n_trials, ran_by_worker)
    dirs = {t.user_attrs["root_dir"] for t in study.get_trials()}
    assert len(dirs) == WORKERS * n_trials
    assert all((Path(d) / "overrides.yaml").is_file() for d in dirs)
