"""The worker's cron service: an APScheduler ``BackgroundScheduler`` firing each cron at its
row's ``nextcall``.

Each active cron of the file has one one-shot APScheduler job, armed at the time its row says
the next tick is due. When it fires it tries to claim and run the tick (``ticks``), then reads
the row again and arms the next job:

- at the row's ``nextcall`` when that is in the future (whichever worker ran the tick moved it
  on), but no later than ``REFRESH`` seconds from now, so a row changed elsewhere (another
  worker's sync, an operator) is picked up;
- ``min(1 s, interval / 4)`` from now when the tick is due but could not be claimed: another
  worker is running it (PostgreSQL). Polling this briefly means a worker dying mid-tick has its
  tick taken over at once;
- ``REFRESH`` seconds from now when the row is inactive.

Why this rather than one job polling every cron at a short period: a tick fires at its
``nextcall`` on every worker at once, so one of them claims it without the delay (up to a
polling period) that would otherwise stretch the gap between ticks; the crons of one worker run
in parallel (APScheduler's thread pool), so a slow one does not hold up the others; and a cron
whose tick outlasts its interval is not re-submitted (and warned about) at every poll while it
runs. All workers fire at the same moments, and the claim makes exactly one of them run the
tick.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

from .rows import sync_rows
from .ticks import next_attempt, now, run_due_tick

if TYPE_CHECKING:
    from ..registry import Registry
    from .config import CronConfig, CronEntry

_logger = logging.getLogger("core.cron")
REFRESH = 60.0  # seconds: the longest a worker goes without re-reading a cron's row


class CronScheduler:
    """Runs the active crons of ``config`` until stopped (a ``core.services.Service``)."""

    name = "crons"

    def __init__(self, registry: Registry, config: CronConfig):
        self.registry = registry
        self.config = config
        self._scheduler = BackgroundScheduler(
            timezone=dt.UTC, job_defaults={"misfire_grace_time": None}
        )
        self._stopping = threading.Event()
        self._in_flight: set[str] = set()
        self._changed = threading.Condition()

    def start(self) -> None:
        """Sync the rows with the file, then fire every active cron at once (each first
        attempt reads its row and runs the tick if it is due)."""
        ids = sync_rows(self.registry, self.config)
        self._scheduler.start()
        for entry in self.config.entries:
            if entry.active:
                self._arm(entry, ids[entry.name], now())

    def stop(self, timeout: float) -> None:
        """Take no new ticks; wait up to ``timeout`` seconds for the ones in flight."""
        self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._changed:
            if not self._changed.wait_for(lambda: not self._in_flight, timeout):
                _logger.warning(
                    "Cron(s) %s still running after %.0f s; the worker exits once they finish "
                    "(signal it again to abandon them: their transactions roll back)",
                    ", ".join(sorted(self._in_flight)),
                    timeout,
                )

    def _arm(self, entry: CronEntry, cron_id: int, when: dt.datetime) -> None:
        if not self._stopping.is_set():
            self._scheduler.add_job(
                self._fire, "date", run_date=when, args=(entry, cron_id), name=entry.name
            )

    def _fire(self, entry: CronEntry, cron_id: int) -> None:
        with self._tracking(entry.name):
            if self._stopping.is_set():
                return
            try:
                run_due_tick(self.registry, cron_id)
                when = _next_fire(entry, next_attempt(self.registry, cron_id))
            except Exception:
                _logger.exception(
                    "Cron '%s': its tick could not be claimed or recorded", entry.name
                )
                when = now() + dt.timedelta(seconds=min(REFRESH, entry.interval_seconds))
        self._arm(entry, cron_id, when)

    @contextlib.contextmanager
    def _tracking(self, name: str) -> Iterator[None]:
        with self._changed:
            self._in_flight.add(name)
        try:
            yield
        finally:
            with self._changed:
                self._in_flight.discard(name)
                self._changed.notify_all()


def _next_fire(entry: CronEntry, nextcall: dt.datetime | None) -> dt.datetime:
    """When to try the cron again, given its row's ``nextcall`` (None: inactive)."""
    current = now()
    latest = current + dt.timedelta(seconds=REFRESH)
    if nextcall is None:
        return latest
    if nextcall <= current:  # due, but another worker is running it
        return current + dt.timedelta(seconds=min(1.0, entry.interval_seconds / 4))
    return min(nextcall, latest)
