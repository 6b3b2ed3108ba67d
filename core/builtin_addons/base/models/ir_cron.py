"""Scheduled actions: one row per entry of cron.yaml (synced by each worker at start), with
its schedule and how its last runs went. See core/cron for how ticks are claimed and run."""

from core import api, fields, models
from core.cron.config import UNIT_SECONDS
from core.exceptions import ValidationError


class Cron(models.Model):
    _name = "ir.cron"
    _description = "Scheduled action"
    _order = "name"
    _sql_constraints = [("name_unique", "unique(name)", "Another scheduled action has this name.")]

    name = fields.Char(required=True)
    model_name = fields.Char(required=True)
    method = fields.Char(required=True)
    args = fields.Json(help="Keyword arguments of the method")
    interval_number = fields.Integer(required=True, default=1)
    interval_type = fields.Selection(
        [(unit, unit.capitalize()) for unit in UNIT_SECONDS], required=True, default="hours"
    )
    user_id = fields.Many2one(
        "res.users", required=True, ondelete="restrict", default=1, help="Runs as this user"
    )
    active = fields.Boolean(default=True)
    nextcall = fields.Datetime(
        required=True,
        index=True,
        default=lambda self: fields.Datetime.now(),
        help="When the next tick is due",
    )
    lastcall = fields.Datetime(help="When the last tick started")
    last_success_at = fields.Datetime()
    last_duration = fields.Float(help="Seconds the last run took")
    failure_count = fields.Integer(default=0, help="Failures since the last success")
    last_error = fields.Text()

    @api.constrains("interval_number")
    def _check_interval_number(self):
        for cron in self:
            if cron.interval_number <= 0:
                raise ValidationError(f"Cron '{cron.name}': the interval must be positive.")
