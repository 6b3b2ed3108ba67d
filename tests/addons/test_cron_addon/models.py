import os

from core import api, fields, models


class Tick(models.Model):
    _name = "test.cron.tick"
    _description = "One run of a test cron"

    pid = fields.Integer()
    label = fields.Char()

    @api.model
    def record_tick(self, label="tick"):
        self.create({"pid": os.getpid(), "label": label})

    @api.model
    def fail(self):
        raise ValueError("boom")
