"""Claiming one tick of a scheduled action, running it, and recording how it went.

A tick is due when its row is active and ``nextcall <= now``. Whoever claims it runs the method
in a transaction of its own, as the cron's user, with ``cron_id``, ``cron_scheduled_at`` (the
claimed ``nextcall``) and ``lastcall`` in the context. Then ``nextcall`` moves on by whole
intervals to the first one after now, so ticks missed while no worker ran run once, not once
per missed interval (as Odoo's ir.cron). A tick that raises is rolled back, logged with the
cron's name (logger ``core.cron``) and recorded: ``last_error``, ``failure_count + 1``. A success
resets ``failure_count`` and sets ``last_success_at``.

Delivery guarantee per backend:

- **PostgreSQL** (any number of workers on any number of machines): **exactly once** per tick
  while workers stay alive. The claim locks the row (``SELECT ... FOR UPDATE SKIP LOCKED`` where
  it is due) in a cron transaction that stays open while the tick runs in its own; the cron
  transaction then moves ``nextcall`` on, records the outcome and commits. Another worker either
  skips the locked row or, once it is committed, no longer finds it due. A worker that dies
  mid-tick has its tick rolled back and its lock released with ``nextcall`` unchanged, so another
  worker runs that tick again: **at least once** across crashes. A cron method must not write
  its own ``ir.cron`` row (it would wait for the lock its worker holds).
- **SQLite** (one machine): **at most once** per tick. SQLite has no row locks, so the claim is a
  conditional ``UPDATE ... SET nextcall = :next WHERE id = :id AND nextcall = :seen``, committed
  before the tick runs (a transaction holding SQLite's write lock for a whole tick would stall
  every other writer); a rowcount of 0 means another process claimed it. A process dying
  mid-tick loses that tick; the next one runs on schedule.

Worker clocks must agree (NTP): ``now`` is the worker's clock, so a worker running ahead runs
ticks early by that much (never twice).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..exceptions import RegistryError
from ..fields import text_problem
from .config import UNIT_SECONDS

if TYPE_CHECKING:
    from ..environment import Cursor
    from ..registry import Registry

_logger = logging.getLogger("core.cron")
_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class Outcome:
    """How one run of a cron went."""

    ok: bool
    duration: float
    error: str | None = None


@dataclass(frozen=True)
class _Tick:
    id: int
    name: str
    model_name: str
    method: str
    args: dict[str, Any]
    user_id: int
    interval: dt.timedelta
    scheduled: dt.datetime  # the claimed nextcall
    lastcall: dt.datetime | None


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def next_call(scheduled: dt.datetime, interval: dt.timedelta, after: dt.datetime) -> dt.datetime:
    """The first ``scheduled + k * interval`` (k >= 1) later than ``after``."""
    missed = max((after - scheduled) // interval + 1, 1)
    return scheduled + interval * missed


def run_due_tick(registry: Registry, cron_id: int) -> Outcome | None:
    """Claim the cron's tick if it is due and nobody else has it, run it and record it.

    Returns the outcome, or None when there was nothing to claim.
    """
    table = registry["ir.cron"]._table_obj
    lock = registry.cursor()
    try:
        started = now()
        row = lock.execute(
            _select(table)
            .where(table.c.id == cron_id, table.c.active.is_(True), table.c.nextcall <= started)
            .with_for_update(skip_locked=True)  # SQLite: no row locks, FOR UPDATE is left out
        ).first()
        if row is None:
            return None
        tick = _tick(registry, row)
        following = next_call(tick.scheduled, tick.interval, started)
        moved = {"nextcall": following, "lastcall": started}
        if lock.dialect == "sqlite":
            claim = sa.update(table).where(table.c.id == cron_id, table.c.nextcall == row.nextcall)
            claimed = lock.execute(claim.values(**moved)).rowcount == 1
            lock.commit()
            if not claimed:
                return None
            moved = {}
        outcome = _run(registry, tick)
        _record(lock, cron_id, outcome, moved)
        return outcome
    finally:
        lock.close()


def run_now(registry: Registry, name: str) -> Outcome:
    """Run the named cron once, whatever its schedule (``nextcall`` stays), and record it.

    On PostgreSQL it first waits for a tick of that cron in flight on a worker.
    """
    table = registry["ir.cron"]._table_obj
    lock = registry.cursor()
    try:
        query = _select(table).where(table.c.name == name)
        if lock.dialect == "postgresql":
            query = query.with_for_update()
        # A name the driver cannot send (a NUL, a lone surrogate) is no cron's name.
        row = None if text_problem(name) else lock.execute(query).first()
        if row is None:
            raise RegistryError(f"No scheduled action named {name!r} (see `llmjobs cron list`).")
        if row.model_name not in registry.models:
            raise RegistryError(
                f"Cron '{name}': model '{row.model_name}' is not loaded (check --addons-path)."
            )
        tick = _tick(registry, row)
        if lock.dialect == "sqlite":
            lock.commit()  # do not hold SQLite's write lock while the method runs
        outcome = _run(registry, tick)
        _record(lock, tick.id, outcome, {"lastcall": now()})
        return outcome
    finally:
        lock.close()


def next_attempt(registry: Registry, cron_id: int) -> dt.datetime | None:
    """The cron's ``nextcall``, or None when its row is inactive or gone."""
    table = registry["ir.cron"]._table_obj
    with registry.environment(readonly=True) as env:
        value = env.cr.execute(
            sa.select(table.c.nextcall).where(table.c.id == cron_id, table.c.active.is_(True))
        ).scalar()
        return registry["ir.cron"]._fields["nextcall"].convert_from_column(value)


def _select(table: sa.Table) -> sa.Select:
    c = table.c
    return sa.select(
        c.id,
        c.name,
        c.model_name,
        c.method,
        c.args,
        c.user_id,
        c.interval_number,
        c.interval_type,
        c.nextcall,
        c.lastcall,
    )


def _tick(registry: Registry, row: sa.Row) -> _Tick:
    as_datetime = registry["ir.cron"]._fields["nextcall"].convert_from_column
    return _Tick(
        id=row.id,
        name=row.name,
        model_name=row.model_name,
        method=row.method,
        args=row.args or {},
        user_id=row.user_id,
        interval=dt.timedelta(seconds=row.interval_number * UNIT_SECONDS[row.interval_type]),
        scheduled=as_datetime(row.nextcall),
        lastcall=as_datetime(row.lastcall),
    )


def _run(registry: Registry, tick: _Tick) -> Outcome:
    """Run the method in a transaction of its own (rolled back when it raises)."""
    context = {"cron_id": tick.id, "cron_scheduled_at": tick.scheduled, "lastcall": tick.lastcall}
    start = time.monotonic()
    try:
        with registry.environment(user=tick.user_id, context=context) as env:
            getattr(env[tick.model_name], tick.method)(**tick.args)
    except Exception as exc:
        _logger.exception("Cron '%s' failed", tick.name)
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_LENGTH]
        return Outcome(False, time.monotonic() - start, error)
    _logger.debug("Cron '%s' ran (tick of %s)", tick.name, tick.scheduled)
    return Outcome(True, time.monotonic() - start)


def _record(lock: Cursor, cron_id: int, outcome: Outcome, values: dict[str, Any]) -> None:
    """Store the outcome (and ``values``) on the cron's row and commit."""
    table = lock.registry["ir.cron"]._table_obj
    if outcome.ok:
        values = {**values, "failure_count": 0, "last_error": None, "last_success_at": now()}
    else:
        failures = sa.func.coalesce(table.c.failure_count, 0) + 1
        values = {**values, "failure_count": failures, "last_error": outcome.error}
    statement = sa.update(table).where(table.c.id == cron_id)
    lock.execute(statement.values(last_duration=outcome.duration, **values))
    lock.commit()
