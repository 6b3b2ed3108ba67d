"""Scheduled actions: one row per entry of cron.yaml, with its schedule and its record."""

from core import fields, models


class Cron(models.Model):
    _name = "ir.cron"
    _description = "Scheduled action"
    _order = "name"
    _sql_constraints = [("name_unique", "unique(name)", "Another scheduled action has this name.")]

    name = fields.Char(required=True)
    model_name = fields.Char(required=True)
    method = fields.Char(required=True)
    args = fields.Json(help="Keyword arguments of the method")
    interval_seconds = fields.Integer(required=True)
    user_id = fields.Many2one("res.users", required=True, ondelete="restrict", default=1)
    active = fields.Boolean(default=True)
    nextcall = fields.Datetime(
        required=True, index=True, default=lambda self: fields.Datetime.now()
    )
    lastcall = fields.Datetime()
    last_success_at = fields.Datetime()
    last_duration = fields.Float(help="Seconds")
    failure_count = fields.Integer(default=0)
    last_error = fields.Text()
