"""Scheduled actions: declared in ``cron.yaml``, run by every ``llmjobs worker``, each tick
once cluster-wide.

``cron.yaml`` (at the repository root; ``LLMJOBS_CRON_FILE`` names another)::

    - name: cleanup_old_generation_jobs     # unique
      model: llm.generation.job
      method: cleanup_old_jobs
      interval: 1 day                      # N seconds|minutes|hours|days
      args: {days: 7}                      # keyword arguments (optional)
      user: __system__                     # login to run as (default: the superuser)
      active: true                         # (default: true)

Entries whose model no loaded addon defines are skipped with a log line; anything else that
is wrong (unknown key, bad interval, a method the model lacks...) stops the start with an
error naming the entry and its line.

Every worker polls the due crons (``nextcall <= now``) every ``TICK`` seconds at most (a
quarter of the shortest interval), so no tick waits an extra interval. Claiming a tick:

- PostgreSQL: the cron's row is locked (``FOR UPDATE SKIP LOCKED``) while the tick runs in its
  own transaction; then ``nextcall`` moves on and the outcome is recorded, in the locking
  transaction. Other workers skip the locked row: one run per tick. A worker dying mid-tick
  releases the lock with ``nextcall`` unchanged, so another worker runs the tick (at least
  once).
- SQLite (one machine): ``nextcall`` is moved on by a conditional UPDATE (``WHERE nextcall =
  :seen``) before running: one run per tick; a process dying mid-tick loses that tick.

``nextcall`` moves on by whole intervals past now: ticks missed while no worker ran run once.
A tick that raises is rolled back, logged with the cron's name and recorded on its row (failure
count, last error); the other crons go on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from .exceptions import RegistryError
from .registry import Registry

_logger = logging.getLogger("core.cron")

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "cron.yaml"
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
KEYS = {"name", "model", "method", "interval", "args", "user", "active"}
_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$")
TICK = 1.0


@dataclass(frozen=True)
class CronEntry:
    name: str
    model: str
    method: str
    interval_seconds: int
    line: int
    args: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    active: bool = True


def cron_file() -> Path:
    return Path(os.environ.get("LLMJOBS_CRON_FILE") or DEFAULT_FILE)


def load_entries(path: Path, registry: Registry) -> list[CronEntry]:
    """The valid entries of ``path`` for the loaded models (RegistryError when malformed)."""
    if not path.exists():
        if os.environ.get("LLMJOBS_CRON_FILE"):
            raise RegistryError(f"Cron file {path} (LLMJOBS_CRON_FILE) does not exist.")
        return []
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise RegistryError(f"{path} must be a list of scheduled actions.")
    entries: list[CronEntry] = []
    for item, node in zip(data, root.value, strict=True):
        line = node.start_mark.line + 1
        entry = _parse(item, f"{path} line {line}", line)
        if entry.model not in registry.models:
            _logger.info("Cron '%s' (%s line %d) skipped: model '%s' is not loaded",
                         entry.name, path, line, entry.model)
            continue
        if not callable(getattr(registry[entry.model], entry.method, None)):
            raise RegistryError(f"Cron '{entry.name}' ({path} line {line}): model "
                                f"'{entry.model}' has no method '{entry.method}'.")
        if any(e.name == entry.name for e in entries):
            raise RegistryError(f"Cron '{entry.name}' ({path} line {line}) is declared twice.")
        entries.append(entry)
    return entries


def _parse(item: Any, where: str, line: int) -> CronEntry:
    if not isinstance(item, dict):
        raise RegistryError(f"{where}: each scheduled action must be a mapping.")
    name = item.get("name")
    label = f"Cron '{name}' ({where})" if name else where
    unknown = set(item) - KEYS
    if unknown:
        raise RegistryError(f"{label}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(KEYS))}.")
    missing = [k for k in ("name", "model", "method", "interval") if not item.get(k)]
    if missing:
        raise RegistryError(f"{label}: missing {', '.join(missing)}.")
    match = _INTERVAL.match(str(item["interval"]))
    if not match or int(match.group(1)) <= 0:
        raise RegistryError(f"{label}: interval {item['interval']!r} must be a positive "
                            "number of seconds, minutes, hours or days (e.g. '30 seconds').")
    args = item.get("args") or {}
    if not isinstance(args, dict):
        raise RegistryError(f"{label}: args must be a mapping of keyword arguments.")
    if not isinstance(item.get("active", True), bool):
        raise RegistryError(f"{label}: active must be true or false.")
    return CronEntry(
        name=str(name), model=str(item["model"]), method=str(item["method"]),
        interval_seconds=int(match.group(1)) * UNITS[match.group(2)], line=line, args=args,
        user=item.get("user"), active=item.get("active", True),
    )


def sync_rows(registry: Registry, entries: list[CronEntry]) -> None:
    """Create or update the ``ir.cron`` rows of the entries; deactivate the others."""
    with registry.environment() as env:
        crons = env["ir.cron"]
        existing = {c.name: c for c in crons.search([])}
        for entry in entries:
            user_id = 1
            if entry.user:
                user = env["res.users"].search([("login", "=", entry.user)], limit=1)
                if not user:
                    raise RegistryError(f"Cron '{entry.name}' (line {entry.line}): no user "
                                        f"with login '{entry.user}'.")
                user_id = user.id
            values = {"model_name": entry.model, "method": entry.method, "args": entry.args,
                      "interval_seconds": entry.interval_seconds, "user_id": user_id,
                      "active": entry.active}
            if entry.name in existing:
                existing.pop(entry.name).write(values)
            else:
                crons.create({"name": entry.name, **values})
        for stale in existing.values():
            stale.active = False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _next_call(nextcall: dt.datetime, interval: int, now: dt.datetime) -> dt.datetime:
    """The first whole-interval step after ``nextcall`` that is later than now."""
    missed = max(int((now - nextcall).total_seconds() // interval) + 1, 1)
    return nextcall + dt.timedelta(seconds=interval * missed)


def run_due(registry: Registry) -> int:
    """Run every cron whose tick is due and that no other worker runs; returns how many."""
    table = registry["ir.cron"]._table_obj
    with registry.environment() as env:
        due = env.cr.execute(
            sa.select(table.c.id).where(table.c.active.is_(True), table.c.nextcall <= _now())
            .order_by(table.c.nextcall)
        ).scalars().all()
    return sum(_claim_and_run(registry, cron_id) for cron_id in due)


def _claim_and_run(registry: Registry, cron_id: int) -> bool:
    table = registry["ir.cron"]._table_obj
    columns = (table.c.id, table.c.name, table.c.model_name, table.c.method, table.c.args,
               table.c.user_id, table.c.interval_seconds, table.c.nextcall)
    lock = registry.cursor()
    try:
        row = lock.execute(
            sa.select(*columns).where(table.c.id == cron_id, table.c.active.is_(True),
                                      table.c.nextcall <= _now())
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return False
        nextcall = _next_call(registry["ir.cron"]._fields["nextcall"].convert_from_column(
            row.nextcall), row.interval_seconds, _now())
        if lock.dialect == "sqlite":  # claim by moving the tick on first (one node)
            claimed = lock.execute(sa.update(table).where(
                table.c.id == cron_id, table.c.nextcall == row.nextcall,
            ).values(nextcall=nextcall, lastcall=_now())).rowcount
            lock.commit()
            if not claimed:
                return False
        outcome = _run(registry, row)
        lock.execute(sa.update(table).where(table.c.id == cron_id).values(
            nextcall=nextcall, lastcall=_now(), **outcome.columns(table)))
        lock.commit()
        return True
    finally:
        lock.close()


@dataclass(frozen=True)
class Outcome:
    ok: bool
    duration: float
    error: str | None = None

    def columns(self, table: sa.Table) -> dict[str, Any]:
        """The ``ir.cron`` columns that record this outcome."""
        if self.ok:
            return {"failure_count": 0, "last_error": None, "last_success_at": _now(),
                    "last_duration": self.duration}
        return {"failure_count": sa.func.coalesce(table.c.failure_count, 0) + 1,
                "last_error": self.error, "last_duration": self.duration}


def _run(registry: Registry, row) -> Outcome:
    """Run one tick in its own transaction (rolled back when it raises)."""
    start = time.monotonic()
    try:
        with registry.environment(user=row.user_id) as env:
            getattr(env[row.model_name], row.method)(**(row.args or {}))
    except Exception as exc:
        _logger.exception("Cron '%s' failed", row.name)
        return Outcome(False, time.monotonic() - start, f"{type(exc).__name__}: {exc}"[:2000])
    return Outcome(True, time.monotonic() - start)


def run_once(registry: Registry, name: str) -> Outcome:
    """Run the named cron now, whatever its schedule (for operators), and record it."""
    table = registry["ir.cron"]._table_obj
    with registry.environment() as env:
        row = env.cr.execute(sa.select(
            table.c.id, table.c.name, table.c.model_name, table.c.method, table.c.args,
            table.c.user_id).where(table.c.name == name)).first()
    if row is None:
        raise RegistryError(f"No scheduled action named '{name}' (see `llmjobs cron list`).")
    outcome = _run(registry, row)
    with registry.environment() as env:
        env.cr.execute(sa.update(table).where(table.c.id == row.id).values(
            lastcall=_now(), **outcome.columns(table)))
    return outcome


class CronService:
    """Runs the due crons from an APScheduler background scheduler (one job, polling)."""

    name = "crons"

    def __init__(self, registry: Registry, path: Path | None = None):
        self.registry = registry
        self.entries = load_entries(path or cron_file(), registry)
        self._scheduler = None
        self._lock = threading.Lock()

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        sync_rows(self.registry, self.entries)
        if not self.entries:
            return
        shortest = min(e.interval_seconds for e in self.entries)
        self._scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._scheduler.add_job(self._tick, "interval", seconds=min(TICK, shortest / 4),
                                max_instances=1, coalesce=True)
        self._scheduler.start()

    def _tick(self) -> None:
        try:
            run_due(self.registry)
        except Exception:
            _logger.exception("Running the due crons failed; trying again at the next tick")

    def stop(self, timeout: float) -> None:
        """Finish the tick in flight, then stop."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
