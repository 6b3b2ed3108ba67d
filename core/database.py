"""SQLAlchemy engines for the two supported databases.

SQLite (the embedded default) is opened with WAL (readers never block the writer), foreign
keys on, a 30 s busy timeout and case-sensitive ``LIKE`` (``ilike`` does the case-insensitive
search, as on PostgreSQL). Every transaction starts with ``BEGIN IMMEDIATE``: it takes the
write lock up front, so two processes never both read then fail to upgrade to writing —
the single-node equivalent of row locking. Transactions must therefore stay short; long
readers use read-only cursors, which begin DEFERRED and, under WAL, never block writers.

PostgreSQL goes through psycopg 3 at READ COMMITTED: each new transaction sees what other
workers committed. The server ends a session that sits idle inside a transaction for longer
than ``LLMJOBS_PG_IDLE_TRANSACTION_TIMEOUT`` seconds (15; 0: never), rolling it back: a process
cut off from the network, or frozen, in the middle of a transaction would otherwise keep its
row locks for as long as the server cannot tell it from a slow one, and nobody could take its
work over. Keep it below the job lease; units of work never wait idle that long inside a
transaction.

A PostgreSQL connection that sat in the pool for ``PING_AFTER_IDLE_SECONDS`` is pinged before
use (a restart, a network cut or an idle timeout may have closed it meanwhile); one in steady
use is not, which saves a round trip on every unit of work. If the server went away since
its last use, its first statement fails as a lost connection: units of work retry on that
(``transient_reason``), and SQLAlchemy then drops every pooled connection older than the
failure, so one unit of work a process notices the restart.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import sqlite3
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from .exceptions import DatabaseUnavailable, RegistryError

_logger = logging.getLogger(__name__)

# How long a SQLite transaction waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = int(os.environ.get("LLMJOBS_SQLITE_BUSY_TIMEOUT_MS", "30000"))
# Execution option of read-only cursors: on SQLite their transactions begin DEFERRED, so a
# long reader (a stream consumer, a monitor) never holds the write lock.
READONLY_OPTION = "llmjobs_readonly"
# Connections open lazily; the ceiling must cover a busy worker (about two per running job:
# the stream's read-only cursor and a short one for each progress write).
POOL_OPTIONS = {"pool_size": 10, "max_overflow": 40}
PG_IDLE_TRANSACTION_TIMEOUT = float(os.environ.get("LLMJOBS_PG_IDLE_TRANSACTION_TIMEOUT", "15"))
PING_AFTER_IDLE_SECONDS = 5.0
_CHECKED_IN_AT = "llmjobs_checked_in_at"  # in a pooled connection's info: time.monotonic()


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str, **options) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise RegistryError(
            f"Invalid database URL: use sqlite:///path/to/file.db or "
            f"postgresql://user:password@host/dbname (got {_redacted(url)})."
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, **options)
    if backend == "postgresql":
        engine = sa.create_engine(_with_session_settings(parsed), **{**POOL_OPTIONS, **options})
        _ping_when_idle(engine)
        return engine
    raise RegistryError(
        f"Unsupported database '{backend}': use SQLite or PostgreSQL (got {_redacted(url)})."
    )


def _with_session_settings(url: sa.URL) -> sa.URL:
    """``url`` whose sessions end an idle transaction (see the module docstring), added to
    the ``options`` the URL may give already (a ``search_path``, say)."""
    if PG_IDLE_TRANSACTION_TIMEOUT <= 0:
        return url
    timeout = f"-c idle_in_transaction_session_timeout={int(PG_IDLE_TRANSACTION_TIMEOUT * 1000)}"
    given = url.query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    return url.update_query_dict({"options": f"{given} {timeout}".strip()})


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout when it sat idle for ``PING_AFTER_IDLE_SECONDS``
    (see the module docstring); a failed ping drops every pooled connection, and the pool
    opens a new one in its place."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)  # None: a new connection
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise sa.exc.InvalidatePoolError(f"the idle connection is gone: {error}") from error


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "an unparsable URL"


def _sqlite_engine(url, **options) -> Engine:
    database = url.database
    if not database or database == ":memory:":
        raise RegistryError(
            "SQLite needs a file (sqlite:///path/to/file.db): an in-memory database is private "
            "to one connection, so workers and the web surface could not share it."
        )
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **{**POOL_OPTIONS, **options},
    )

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "synchronous=NORMAL",
            "case_sensitive_like=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):
        readonly = connection.get_execution_options().get(READONLY_OPTION)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


# -- errors that mean "the database is away", not "the statement is wrong" -------------------
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def transient_reason(error: BaseException) -> str | None:
    """Why ``error`` is a passing unavailability of the database, in a few words; None when
    it is not one (a wrong statement, a constraint: retrying would fail the same way).

    Passing: a lost, refused or reset connection; the connection pool exhausted; SQLite's
    write lock held by another process past the busy timeout, or its files not opened while
    the process is at its limit of open files; on PostgreSQL any operational
    error (server shutting down or restarting, deadlock, serialization failure, lock or
    statement timeout).
    """
    if isinstance(error, DatabaseUnavailable):
        return error.reason
    if isinstance(error, sa.exc.TimeoutError):
        return "all database connections are busy"
    if not isinstance(error, sa.exc.DBAPIError):
        return None
    if error.connection_invalidated:
        return "lost the database connection"
    original = error.orig
    if isinstance(original, sqlite3.Error):
        text = str(original).lower()
        operational = isinstance(original, sqlite3.OperationalError)
        if operational and any(busy in text for busy in _SQLITE_BUSY):
            return "the database is locked by another process"
        if operational and "unable to open" in text and _out_of_files():
            return "this process has as many files open as it may"
        return None
    import psycopg

    if isinstance(original, psycopg.errors.TransactionRollback):
        return "a concurrent transaction conflicted"
    if isinstance(original, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return "the database took too long to answer"
    if isinstance(original, psycopg.OperationalError | psycopg.InterfaceError):
        return "lost the database connection"
    return None


def _out_of_files() -> bool:
    """Whether this process is at its limit of open files (SQLite then cannot open its
    journal or a temporary file: a passing shortage, unlike a wrong path)."""
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError as error:  # no file left to list them with, or no /proc (not Linux)
        return error.errno == errno.EMFILE
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft != resource.RLIM_INFINITY and open_now >= soft - 2


def raise_if_unavailable(error: BaseException) -> None:
    """Raise ``DatabaseUnavailable`` (from ``error``) when ``error`` is a passing
    unavailability (see ``transient_reason``); return otherwise, for the caller to re-raise
    ``error`` itself."""
    if isinstance(error, DatabaseUnavailable):
        return
    reason = transient_reason(error)
    if reason is not None:
        availability.lost(reason)
        raise DatabaseUnavailable(reason) from error


class Availability:
    """Whether this process reaches its database, as its units of work find out (a cursor
    reports each failure, and each write transaction that commits): one warning when it
    stops, one line when it has been back for STABLE_SECONDS, whatever the number of
    threads, jobs and retries that notice. An outage starting again within QUIET_SECONDS of a
    warning is not announced again."""

    QUIET_SECONDS = 10.0
    STABLE_SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_loss = 0.0
        self._announced = False
        self._last_warning = -self.QUIET_SECONDS

    def lost(self, reason: str) -> None:
        with self._lock:
            now = self._last_loss = time.monotonic()
            if self._down_since is None:
                self._down_since = now
            if not self._announced and now - self._last_warning >= self.QUIET_SECONDS:
                self._announced, self._last_warning = True, now
                _logger.warning(
                    "The database is unavailable (%s): work waits for it and goes on when it "
                    "is back.",
                    reason,
                )

    def reached(self) -> None:
        if self._down_since is None:  # the common case: no lock
            return
        with self._lock:
            if self._down_since is None or time.monotonic() - self._last_loss < self.STABLE_SECONDS:
                return  # still failing now and then: not back yet
            lasted, self._down_since = self._last_loss - self._down_since, None
            if self._announced:
                self._announced = False
                _logger.warning("The database is reachable again (it failed for %.1f s).", lasted)


availability = Availability()
