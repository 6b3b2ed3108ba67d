"""One try at running a job: when it started and ended, where, and how it went."""

from core import api, fields, models

OUTCOMES = [
    ("running", "Running"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
    ("lost", "Lost (worker stopped renewing its lease)"),
    ("interrupted", "Interrupted (handed back to the queue; not counted as a retry)"),
]


class GenerationJobAttempt(models.Model):
    _name = "llm.generation.job.attempt"
    _description = "LLM generation job attempt"
    _order = "job_id, number"

    job_id = fields.Many2one("llm.generation.job", required=True, ondelete="cascade", index=True)
    number = fields.Integer(required=True, help="1 for the first try, 2 for the first retry...")
    worker = fields.Char(help="host:pid of the worker that ran it")
    started_at = fields.Datetime(required=True)
    ended_at = fields.Datetime()
    outcome = fields.Selection(OUTCOMES, default="running", required=True)
    error_message = fields.Text()
    duration = fields.Float(compute="_compute_duration", store=True, help="Seconds")

    @api.depends("started_at", "ended_at")
    def _compute_duration(self):
        for attempt in self:
            ended, started = attempt.ended_at, attempt.started_at
            attempt.duration = (ended - started).total_seconds() if ended and started else 0.0
