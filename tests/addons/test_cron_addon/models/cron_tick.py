"""A model whose methods serve as crons in the tests: each run records the tick it ran (its
scheduled time, the process and the user), or fails."""

import os
import time

from core import api, fields, models


class CronTick(models.Model):
    _name = "test.cron.tick"
    _description = "One run of a test cron"
    _order = "scheduled_at, id"

    cron_id = fields.Integer()
    scheduled_at = fields.Datetime(help="The tick's claimed nextcall")
    pid = fields.Integer()
    uid = fields.Integer(help="The user the cron ran as")
    label = fields.Char()

    @api.model
    def record_tick(self, label="tick", seconds=0.0):
        """Record this tick; ``seconds`` makes it last that long (after recording it)."""
        self.sudo().create(
            {
                "cron_id": self.env.context.get("cron_id"),
                "scheduled_at": self.env.context.get("cron_scheduled_at"),
                "pid": os.getpid(),
                "uid": self.env.uid,
                "label": label,
            }
        )
        time.sleep(seconds)

    @api.model
    def fail(self):
        """Write, then raise: the write must be rolled back."""
        self.record_tick(label="boom")
        raise ValueError("boom")
