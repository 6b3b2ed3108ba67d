"""Keeping the ``ir.cron`` rows in step with the cron file (each worker does it at start)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..environment import SUPERUSER_ID
from ..exceptions import RegistryError
from .config import CronConfig, CronEntry

if TYPE_CHECKING:
    from ..environment import Environment
    from ..models import BaseModel
    from ..registry import Registry

_SYNC_LOCK_KEY = 0x6C6C6D63  # PostgreSQL advisory lock serialising workers' syncs ("llmc")


def sync_rows(registry: Registry, config: CronConfig) -> dict[str, int]:
    """Create or update (by name) the rows of the config's entries; returns their ids.

    Rows of this registry's models that the file no longer declares are deactivated; rows of
    models not loaded here are left as they are (a worker with other addons, and a cron file
    of its own, keeps them up to date).
    Only changed values are written, so a row locked by a tick in flight on another worker
    only delays the sync when its declaration changed.
    """
    with registry.environment() as env:
        if env.cr.dialect == "postgresql":  # workers starting together must not both create
            env.cr.execute(sa.select(sa.func.pg_advisory_xact_lock(_SYNC_LOCK_KEY)))
        crons = env["ir.cron"]
        existing = {cron.name: cron for cron in crons.search([])}
        ids = {}
        for entry in config.entries:
            values = _values(env, entry)
            cron = existing.get(entry.name)
            if cron is None:
                cron = crons.create({"name": entry.name, **values})
            else:
                _update(cron, entry, values)
            ids[entry.name] = cron.id
        for name, cron in existing.items():
            if name not in config.declared and cron.active and cron.model_name in registry.models:
                cron.active = False
        return ids


def _values(env: Environment, entry: CronEntry) -> dict[str, Any]:
    user_id = SUPERUSER_ID
    if entry.user:
        user = env["res.users"].search([("login", "=", entry.user), ("active", "=", True)])
        if not user:
            raise RegistryError(f"{entry.label}: no active user with login '{entry.user}'.")
        user_id = user.id
    return {
        "model_name": entry.model,
        "method": entry.method,
        "args": entry.args,
        "interval_number": entry.interval_number,
        "interval_type": entry.interval_type,
        "user_id": user_id,
        "active": entry.active,
    }


def _update(cron: BaseModel, entry: CronEntry, values: dict[str, Any]) -> None:
    changed = {
        key: value
        for key, value in values.items()
        if (cron[key].id if key == "user_id" else cron[key]) != value
    }
    if {"interval_number", "interval_type"} & set(changed):
        # A shorter interval takes effect now, not after the old (longer) one.
        soonest = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=entry.interval_seconds)
        changed["nextcall"] = min(cron.nextcall, soonest)
    if changed:
        cron.write(changed)
