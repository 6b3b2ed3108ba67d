"""Wake-ups between processes (an addon's "a job was queued", "a job made progress"...).

Senders call ``Notifier.send(cr, channel, payload)`` inside their transaction; receivers
``listen(channel, ...)`` once, then ``wait(channel, payload, since, timeout)``. Delivery happens
when (and only if) the transaction commits:

- on PostgreSQL through ``pg_notify`` (NOTIFY is transactional), one call per channel for
  all of a transaction's payloads, in one statement just before it commits; received by one LISTEN
  connection per process whose thread wakes the local waiters — any machine sharing the
  database hears it;
- in every process, through a post-commit hook that wakes local waiters directly. A NOTIFY
  says which notifier sent it, and that notifier's listener drops it when it comes back: its
  waiters were woken once, at the commit, and a second wake-up would only cost them a look.

SQLite has no NOTIFY: another process's signals cannot be heard. For the channels named in
``watch_commits``, a thread reads SQLite's ``PRAGMA data_version`` every WATCH_INTERVAL and
wakes their waiters whenever any connection committed to the database: they re-check, so a
wake-up that was not for them costs only their look, and a worker in another process hears a
queued job within milliseconds rather than at its next poll.

A wait that times out is not an error: callers re-check the database, so a lost wake-up only
costs the poll interval.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import secrets
import threading
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .database import availability

if TYPE_CHECKING:
    from core.environment import Cursor
    from core.registry import Registry

_logger = logging.getLogger(__name__)
_CHANNEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PAYLOADS_PER_NOTIFY = 500  # NOTIFY payloads stay under PostgreSQL's 8000 bytes
_NOTIFIES_PER_STATEMENT = 100
WATCH_INTERVAL = 0.01  # seconds between two looks at SQLite's data_version
MAX_TRACKED = 10_000  # payloads remembered; beyond, they are forgotten (see _signal_each)


Generation = tuple[int, int]  # (the payload's last signal, commits seen on SQLite)


class Notifier:
    """Per-registry wake-up hub. Get it with ``notifier_for(registry)``."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._condition = threading.Condition()
        # (channel, payload) -> the number of the last signal; waiters compare generations.
        self._generations: dict[tuple[str, str], int] = {}
        self._signals = itertools.count(1)
        # channel -> commits seen by the SQLite watcher, part of every generation of it.
        self._commits: defaultdict[str, int] = defaultdict(int)
        self._watched: set[str] = set()
        self._listener: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._channels: set[str] = set()
        self._stop = threading.Event()
        # Prefixed to this notifier's NOTIFY payloads ("<origin>|<payloads>"): its own come
        # back to its listener, which drops them.
        self._origin = secrets.token_hex(6)
        # The payloads of each open transaction, sent when it commits (see send_many).
        self._pending: weakref.WeakKeyDictionary[Cursor, tuple[int, dict[str, dict[str, None]]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- sending -----------------------------------------------------------------------------
    def send(self, cr: Cursor, channel: str, payload: str | int = "") -> None:
        """Deliver ``(channel, payload)`` when ``cr``'s transaction commits."""
        self.send_many(cr, channel, [payload])

    def send_many(self, cr: Cursor, channel: str, payloads: list[str | int]) -> None:
        """``send`` for many payloads. A transaction's payloads go out together just before
        it commits, one NOTIFY per channel (payloads joined by commas, so a payload has
        none); receivers are woken for each."""
        transaction, pending = self._pending.get(cr, (None, None))
        if pending is None or transaction != cr.transaction:  # (a rolled back one's)
            pending = defaultdict(dict)
            self._pending[cr] = (cr.transaction, pending)
            cr.precommit(functools.partial(self._notify, cr, pending))
            cr.postcommit(functools.partial(self._delivered, pending))
        pending[channel].update(dict.fromkeys(str(p) for p in payloads))

    def _notify(self, cr: Cursor, pending: dict[str, dict[str, None]]) -> None:
        if cr.dialect != "postgresql":
            return
        notifies = []
        for channel, payloads in pending.items():
            texts = list(payloads)
            for start in range(0, len(texts), _PAYLOADS_PER_NOTIFY):
                batch = ",".join(texts[start : start + _PAYLOADS_PER_NOTIFY])
                notifies.append(sa.func.pg_notify(channel, f"{self._origin}|{batch}"))
        for start in range(0, len(notifies), _NOTIFIES_PER_STATEMENT):
            cr.execute(sa.select(*notifies[start : start + _NOTIFIES_PER_STATEMENT]))

    def _delivered(self, pending: dict[str, dict[str, None]]) -> None:
        for channel, payloads in pending.items():
            self._signal_each(channel, list(payloads))

    def _signal_each(self, channel: str, payloads: list[str]) -> None:
        """Number the signal of each payload. A long-lived process signals every job it ever
        ran: past MAX_TRACKED the payloads are forgotten, which wakes their waiters once
        (they re-check); numbers only grow, so no later signal can look like an old one."""
        with self._condition:
            if len(self._generations) > MAX_TRACKED:
                self._generations = {k: v for k, v in self._generations.items() if not k[1]}
            for payload in payloads:
                self._generations[(channel, payload)] = next(self._signals)
            self._generations[(channel, "")] = next(self._signals)
            self._condition.notify_all()

    def signal(self, channel: str, payload: str = "") -> None:
        """Wake this process's waiters on ``(channel, payload)`` now, with no database."""
        self._signal_each(channel, [payload])

    # -- receiving ---------------------------------------------------------------------------
    def generation(self, channel: str, payload: str | int = "") -> Generation:
        """A marker to pass to ``wait``: take it *before* checking the database, so a signal
        sent between the check and the wait is not missed."""
        with self._condition:
            return self._generation(channel, str(payload))

    def _generation(self, channel: str, payload: str) -> Generation:
        return self._generations.get((channel, payload), 0), self._commits[channel]

    def wait(self, channel: str, payload: str | int, since: Generation, timeout: float) -> bool:
        """Wait until ``(channel, payload)`` is signalled after ``since`` (``payload=""``:
        any payload). Returns whether it was."""
        payload = str(payload)
        with self._condition:
            return self._condition.wait_for(
                lambda: self._generation(channel, payload) != since, timeout
            )

    def listen(self, *channels: str) -> None:
        """Hear other processes' notifications on ``channels`` from now on (PostgreSQL; on
        SQLite only this process's are heard). Idempotent."""
        for channel in channels:
            if not _CHANNEL_NAME.match(channel):
                raise ValueError(f"Invalid notification channel name {channel!r}.")
        with self._condition:
            self._channels.update(channels)
        if self.registry.dialect != "postgresql" or self._listener is not None:
            return
        self._listener = threading.Thread(target=self._listen, name="llmjobs-listen", daemon=True)
        self._listener.start()

    def watch_commits(self, *channels: str) -> None:
        """On SQLite, wake the waiters of ``channels`` whenever any process commits to the
        database (see the module docstring); nothing on PostgreSQL, where NOTIFY reaches
        them. For channels whose waiters re-check cheaply: not for one whose every wake-up
        leads to a write, or its waiter's own commits would wake it again. Idempotent."""
        database = self.registry.engine.url.database
        if self.registry.dialect != "sqlite" or not database or database == ":memory:":
            return
        with self._condition:
            self._watched.update(channels)
            if self._watcher is not None:
                return
            self._watcher = threading.Thread(
                target=self._watch, args=(database,), name="llmjobs-watch", daemon=True
            )
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        for thread in (self._listener, self._watcher):
            if thread is not None:
                thread.join(timeout=5)
        self._listener = self._watcher = None

    def _watch(self, database: str) -> None:
        import sqlite3

        seen = None
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                with contextlib.closing(sqlite3.connect(database, timeout=1)) as connection:
                    while not self._stop.wait(WATCH_INTERVAL):
                        version = connection.execute("PRAGMA data_version").fetchone()[0]
                        if version != seen:
                            seen = version
                            self._commit_seen()
            except sqlite3.Error as exc:
                _logger.debug("SQLite commit watcher: %s; reopening", exc)
                self._stop.wait(1)

    def _commit_seen(self) -> None:
        with self._condition:
            for channel in self._watched:
                self._commits[channel] += 1
            self._condition.notify_all()

    def _listen(self) -> None:
        import psycopg

        url = self.registry.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as connection:
                    listening: set[str] = set()
                    while not self._stop.is_set():
                        with self._condition:
                            new = self._channels - listening
                        for channel in sorted(new):  # names checked by listen()
                            connection.execute(f"LISTEN {channel}")
                            listening.add(channel)
                        for notification in connection.notifies(timeout=0.5):
                            origin, _, payloads = notification.payload.rpartition("|")
                            if origin != self._origin:  # (its own: signalled at the commit)
                                self._signal_each(notification.channel, payloads.split(","))
            except psycopg.Error as exc:  # the outage is logged once, by core.database
                availability.lost("the notification listener lost its connection")
                _logger.debug("Notification listener: %s; reconnecting", type(exc).__name__)
                self._stop.wait(1)


_NOTIFIERS: dict[int, Notifier] = {}
_LOCK = threading.Lock()


def notifier_for(registry: Registry) -> Notifier:
    """The registry's notifier (created on first use)."""
    with _LOCK:
        notifier = _NOTIFIERS.get(id(registry))
        if notifier is None or notifier.registry is not registry:
            notifier = _NOTIFIERS[id(registry)] = Notifier(registry)
        return notifier
