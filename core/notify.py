"""Wake-ups between processes (an addon's "a job was queued", "a job made progress"...).

Senders call ``Notifier.send(cr, channel, payload)`` inside their transaction; receivers
``listen(channel, ...)`` once, then ``wait(channel, payload, since, timeout)``. Delivery happens
when (and only if) the transaction commits:

- on PostgreSQL through ``pg_notify`` (NOTIFY is transactional), received by one LISTEN
  connection per process whose thread wakes the local waiters — any machine sharing the
  database hears it;
- in every process, through a post-commit hook that wakes local waiters directly (the only
  path on SQLite, where other processes fall back to polling).

A wait that times out is not an error: callers re-check the database, so a lost wake-up only
costs the poll interval.
"""

from __future__ import annotations

import logging
import re
import threading
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


class Notifier:
    """Per-registry wake-up hub. Get it with ``notifier_for(registry)``."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._condition = threading.Condition()
        # (channel, payload) -> number of signals so far; waiters compare generations.
        self._generations: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._listener: threading.Thread | None = None
        self._channels: set[str] = set()
        self._stop = threading.Event()

    # -- sending -----------------------------------------------------------------------------
    def send(self, cr: Cursor, channel: str, payload: str | int = "") -> None:
        """Deliver ``(channel, payload)`` when ``cr``'s transaction commits."""
        payload = str(payload)
        if cr.dialect == "postgresql":
            cr.execute(sa.select(sa.func.pg_notify(channel, payload)))
        cr.postcommit(lambda: self.signal(channel, payload))

    def send_many(self, cr: Cursor, channel: str, payloads: list[str | int]) -> None:
        """``send`` for many payloads in one NOTIFY (payloads joined by commas, so a payload
        has none); receivers are woken for each."""
        texts = [str(p) for p in payloads]
        for start in range(0, len(texts), _PAYLOADS_PER_NOTIFY):
            batch = texts[start : start + _PAYLOADS_PER_NOTIFY]
            if cr.dialect == "postgresql":
                cr.execute(sa.select(sa.func.pg_notify(channel, ",".join(batch))))
            cr.postcommit(lambda batch=batch: self._signal_each(channel, batch))

    def _signal_each(self, channel: str, payloads: list[str]) -> None:
        with self._condition:
            for payload in payloads:
                self._generations[(channel, payload)] += 1
            self._generations[(channel, "")] += 1
            self._condition.notify_all()

    def signal(self, channel: str, payload: str = "") -> None:
        """Wake this process's waiters on ``(channel, payload)`` now, with no database."""
        self._signal_each(channel, [payload])

    # -- receiving ---------------------------------------------------------------------------
    def generation(self, channel: str, payload: str | int = "") -> int:
        """A marker to pass to ``wait``: take it *before* checking the database, so a signal
        sent between the check and the wait is not missed."""
        with self._condition:
            return self._generations[(channel, str(payload))]

    def wait(self, channel: str, payload: str | int, since: int, timeout: float) -> bool:
        """Wait until ``(channel, payload)`` is signalled after ``since`` (``payload=""``:
        any payload). Returns whether it was."""
        key = (channel, str(payload))
        with self._condition:
            return self._condition.wait_for(lambda: self._generations[key] != since, timeout)

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

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None

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
                            self._signal_each(notification.channel, notification.payload.split(","))
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
