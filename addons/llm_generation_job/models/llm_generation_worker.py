"""Worker processes running generation jobs: which are alive, where, doing how much.

Each job runner (one per ``llmjobs worker`` process) registers a row when it starts and beats
every few seconds: host, pid, start, last beat, the queues it serves, its slots and running
jobs. A worker is *live* while its last beat is recent: ``alive_until`` is three beat intervals
after it, so a killed or frozen worker stops being live within seconds; one that stopped
cleanly says when (``stopped_at``). Followers use this to tell a caller that no worker serves
their queue, and ``generate_response(use_queue=None)`` to stream directly instead.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from core import api, fields, models

MISSED_BEATS = 3  # a worker is presumed dead after this many beat intervals without a beat


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GenerationWorker(models.Model):
    _name = "llm.generation.worker"
    _description = "LLM generation worker"
    _order = "started_at desc, id desc"

    name = fields.Char(required=True, help="host:pid")
    host = fields.Char(required=True)
    pid = fields.Integer(required=True)
    started_at = fields.Datetime(required=True)
    last_beat_at = fields.Datetime()
    alive_until = fields.Datetime(index=True, help="Live while its beats keep this ahead")
    stopped_at = fields.Datetime(help="When it stopped cleanly")
    provider_ids = fields.Many2many(
        "llm.provider", string="Queues", help="The providers whose queues it serves; empty: all"
    )
    slots = fields.Integer(help="How many jobs it runs at once")
    running_jobs = fields.Integer()
    is_live = fields.Boolean(compute="_compute_is_live", search="_search_is_live")

    def _compute_is_live(self):
        now = _now()
        for worker in self:
            worker.is_live = bool(
                not worker.stopped_at and worker.alive_until and worker.alive_until > now
            )

    def _search_is_live(self, operator, value):
        now = _now()
        if (operator == "=") == bool(value):
            return ["&", ("stopped_at", "=", False), ("alive_until", ">", now)]
        return [
            "|",
            ("stopped_at", "!=", False),
            "|",
            ("alive_until", "=", False),
            ("alive_until", "<=", now),
        ]

    @api.model
    def live_count(self, provider_id: int) -> int:
        """How many live workers serve the queue of ``provider_id``."""
        return self.sudo().search_count(
            [
                ("is_live", "=", True),
                "|",
                ("provider_ids", "=", False),
                ("provider_ids", "in", [provider_id]),
            ]
        )

    # -- used by the job runner --------------------------------------------------------------
    @api.model
    def register(self, slots: int, provider_ids: list[int], beat_seconds: float):
        """A row for this process's runner, live from now."""
        now = _now()
        return self.sudo().create(
            {
                "name": f"{socket.gethostname()}:{os.getpid()}",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": now,
                "last_beat_at": now,
                "alive_until": now + dt.timedelta(seconds=MISSED_BEATS * beat_seconds),
                "provider_ids": provider_ids,
                "slots": slots,
                "running_jobs": 0,
            }
        )

    def beat(self, running_jobs: int, beat_seconds: float) -> None:
        now = _now()
        self.sudo().write(
            {
                "last_beat_at": now,
                "running_jobs": running_jobs,
                "stopped_at": False,
                "alive_until": now + dt.timedelta(seconds=MISSED_BEATS * beat_seconds),
            }
        )

    def mark_stopped(self) -> None:
        self.sudo().write({"stopped_at": _now(), "running_jobs": 0, "alive_until": False})

    @api.model
    def cleanup_stopped(self, days: int = 7) -> int:
        """Delete the rows of workers not live for ``days`` days; returns how many."""
        cutoff = _now() - dt.timedelta(days=days)
        old = self.sudo().search([("is_live", "=", False), ("last_beat_at", "<", cutoff)])
        count = len(old)
        old.unlink()
        return count
