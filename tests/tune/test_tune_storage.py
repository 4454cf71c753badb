"""Study storages: URL checks, the SQLite default, and fast, clear errors for unreachable servers."""

from __future__ import annotations

import socket

import optuna
import pytest

from ember.tune import StorageConnectionError, open_storage, optimize
from ember.tune.storage import redact, sqlite_url


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_sqlite_url_of_an_absolute_path_has_four_slashes(tmp_path):
    url = sqlite_url(tmp_path / "a.db")
    assert url.startswith("sqlite:////") and url.endswith("/a.db")
    storage = open_storage(url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (tmp_path / "a.db").exists()


def test_sqlite_parent_directories_are_created(tmp_path):
    open_storage(sqlite_url(tmp_path / "deep" / "er" / "s.db"))
    assert (tmp_path / "deep" / "er" / "s.db").exists()


def test_default_storage_is_a_sqlite_file_in_the_study_directory(tmp_path):
    study = optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, study_name="local", root_dir=tmp_path)
    assert (tmp_path / "local" / "study.db").exists()
    again = optuna.load_study(study_name="local", storage=sqlite_url(tmp_path / "local" / "study.db"))
    assert len(again.trials) == 2 and again.best_value == study.best_value


def test_storage_objects_pass_through():
    storage = optuna.storages.InMemoryStorage()
    assert open_storage(storage) is storage


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("study.db", "is not a storage URL; use sqlite:///"),
        ("postgresql//user@host/db", "is not a storage URL"),
        ("postgresql://u:p@host:notaport/db", "is not a valid database URL"),
        ("postgresql://u:p@host:5432", "names no database"),
        ("sqlite://", "names no database file"),
        ("sqlite:///:memory:", "names no database file"),
        ("mongodb://host/db", "unsupported database 'mongodb'"),
        ("redis://host:port/0", "is not a valid Redis URL"),
        ("redis://host:6379/zero", "the database 'zero' must be a number"),
        ("redis:///0", "names no host"),
    ],
)
def test_malformed_storage_urls_are_rejected_by_name(url, message):
    with pytest.raises(ValueError) as info:
        open_storage(url)
    assert message in str(info.value)


def test_passwords_are_hidden_in_errors():
    assert redact("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    with pytest.raises(ValueError) as info:
        open_storage("postgresql://me:s3cret@db:port/x")
    assert "s3cret" not in str(info.value) and "me:***@db" in str(info.value)


@pytest.mark.parametrize("scheme", ["postgresql", "redis"])
def test_unreachable_servers_fail_fast_with_a_clear_error(scheme):
    port = _closed_port()
    url = f"postgresql://ember:pw@127.0.0.1:{port}/x" if scheme == "postgresql" else f"redis://127.0.0.1:{port}/0"
    with pytest.raises(StorageConnectionError) as info:
        open_storage(url, connect_timeout=2)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and ("refused" in message or "could not connect" in message.lower())
    assert "pw@" not in message


def test_wrong_postgres_password_and_database_are_reported(postgres_url):
    wrong_password = postgres_url.replace("ember:ember@", "ember:wrong@")
    with pytest.raises(StorageConnectionError, match="password authentication failed") as info:
        open_storage(wrong_password)
    assert "wrong" not in str(info.value)
    with pytest.raises(StorageConnectionError, match='database "no_such_db" does not exist'):
        open_storage(postgres_url.rsplit("/", 1)[0] + "/no_such_db")


def test_joining_a_study_with_the_other_direction_is_an_error(tmp_path):
    optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1, study_name="dir", root_dir=tmp_path)
    with pytest.raises(ValueError, match="already exists with direction='minimize'; you asked for 'maximize'"):
        optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=1, study_name="dir", root_dir=tmp_path, direction="maximize"
        )
