"""Where a study lives: a local SQLite file (the default), PostgreSQL (or MySQL) through Optuna's
RDB storage, or Redis through Optuna's journal storage. Any number of processes, on any number of
machines, that open the same URL and study name work on the same study.

URLs::

    sqlite:///relative/path.db     sqlite:////absolute/path.db   (four slashes: the path starts with /)
    postgresql://user:password@host:5432/database
    redis://[:password@]host:6379/0

Bad URLs raise ``ValueError``; a server that cannot be reached raises :class:`StorageConnectionError`
within ``connect_timeout`` seconds instead of hanging.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ember.tune._deps import import_optuna

_FORMS = (
    "sqlite:///path.db (sqlite:////abs/path.db), postgresql://user:password@host:port/database or redis://host:port/db"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_RDB_BACKENDS = ("sqlite", "postgresql", "mysql")
# pg_advisory_lock key serialising Optuna's schema creation between processes ("ember-tune" in hex)
_PG_LOCK_KEY = 0x656D6265722D74


class StorageConnectionError(ConnectionError):
    """The study storage could not be reached or opened (the message names it, password hidden)."""


def sqlite_url(path: str | Path) -> str:
    """The SQLite URL of a file (absolute, so ``sqlite:////...``)."""
    return "sqlite:///" + str(Path(path).resolve())


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"^([^:/]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def open_storage(storage: Any, connect_timeout: float = 10.0) -> Any:
    """An Optuna storage for ``storage`` (a URL, see the module docs, or a storage object as is).

    Checks the URL, connects once (so an unreachable server fails now, after at most
    ``connect_timeout`` seconds) and creates Optuna's tables when needed.
    """
    optuna = import_optuna()
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise TypeError(f"storage must be a URL string or an optuna storage, got {type(storage).__name__}")
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) or connect_timeout <= 0:
        raise ValueError(f"connect_timeout={connect_timeout!r} must be a positive number of seconds")
    url = storage.strip()
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(f"storage={redact(url)!r} is not a storage URL; use {_FORMS}")
    scheme = match.group(1).lower()
    if scheme in ("redis", "rediss"):
        return _open_redis(url, connect_timeout)
    return _open_rdb(url, connect_timeout)


# --------------------------------------------------------------------------- Redis (journal storage)


def _open_redis(url: str, timeout: float) -> Any:
    optuna = import_optuna()
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as err:
        raise ImportError('a Redis study storage needs the redis package: pip install "ember[tune]"') from err
    shown = redact(url)
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        raise ValueError(f"storage={shown!r} is not a valid Redis URL: {err}") from None
    if not parts.hostname:
        raise ValueError(f"storage={shown!r} is not a valid Redis URL: it names no host (use redis://host:6379/0)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(
            f"storage={shown!r} is not a valid Redis URL: the database {db!r} must be a number (redis://host:6379/0)"
        )
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_connect_timeout", str(timeout))
    url = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        client.ping()
        client.close()
    except ValueError as err:
        raise ValueError(f"storage={shown!r} is not a valid Redis URL: {err}") from None
    except redis.exceptions.RedisError as err:
        raise StorageConnectionError(f"cannot reach the Redis study storage {shown}: {err}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = optuna.storages.journal.JournalRedisBackend(url)
        return optuna.storages.JournalStorage(backend)


# --------------------------------------------------------------------------- SQL databases (RDB storage)


def _open_rdb(url: str, timeout: float) -> Any:
    optuna = import_optuna()
    import sqlalchemy
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:
        raise ValueError(f"storage={shown!r} is not a valid database URL ({err}); use {_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":  # the old spelling, which SQLAlchemy no longer accepts
        parsed = parsed.set(drivername="postgresql" + parsed.drivername[len("postgres") :])
        backend = "postgresql"
    if backend not in _RDB_BACKENDS:
        raise ValueError(f"storage={shown!r}: unsupported database {backend!r}; use {_FORMS}")
    connect_args: dict[str, Any]
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(
                f"storage={shown!r} names no database file; use sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 60.0}  # seconds to wait for another process's write lock
    else:
        if not parsed.database:
            raise ValueError(f"storage={shown!r} names no database (add /database at the end)")
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername=_postgres_driver())
        connect_args = {"connect_timeout": max(1, math.ceil(timeout))}
    full = parsed.render_as_string(hide_password=False)
    engine_kwargs = {"connect_args": connect_args, "pool_pre_ping": True}
    try:
        with _schema_lock(full, backend, connect_args):
            return _rdb_storage(optuna, full, engine_kwargs)
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageConnectionError(f"cannot open the study storage {shown}: {reason}") from None


def _postgres_driver() -> str:
    # SQLAlchemy 2.1 maps postgresql:// to psycopg (3); ember[tune] installs psycopg2
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise ImportError('a PostgreSQL study storage needs psycopg2: pip install "ember[tune]"')


@contextlib.contextmanager
def _schema_lock(url: str, backend: str, connect_args: dict[str, Any]) -> Any:
    """On PostgreSQL, hold an advisory lock while Optuna creates its tables: processes that start
    together would otherwise race to create them. Elsewhere, :func:`_rdb_storage` retries."""
    if backend != "postgresql":
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            ready = _schema_ready(sqlalchemy, conn)
        if ready:  # the usual case: nothing to create, no need to queue
            yield
            return
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
    finally:
        engine.dispose()


def _schema_ready(sqlalchemy: Any, conn: Any) -> bool:
    """Whether Optuna's tables exist and are stamped (the stamp is the last step of creating them)."""
    if not sqlalchemy.inspect(conn).has_table("alembic_version"):
        return False
    return conn.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).scalar() > 0


def _rdb_storage(optuna: Any, url: str, engine_kwargs: dict[str, Any]) -> Any:
    import sqlalchemy

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as err:
            racing = isinstance(err, sqlalchemy.exc.IntegrityError) or any(
                s in str(err) for s in ("already exists", "database is locked")
            )
            if not racing or attempt == 4:
                raise
            time.sleep(0.1 + random.random() * 0.4)  # another process is creating the same tables
    raise AssertionError("unreachable")
