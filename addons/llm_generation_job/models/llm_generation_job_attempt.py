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
    first_token_at = fields.Datetime(
        help="When its first piece of reply was committed, for followers to see (time to first "
        "token: this minus started_at, to within a writer flush)"
    )
    ended_at = fields.Datetime(index=True)  # the windows of the overview and diagnostics
    outcome = fields.Selection(OUTCOMES, default="running", required=True)
    estimated_tokens = fields.Integer(
        help="Its tokens as estimated when it started, under a tokens-a-minute limit"
    )
    started_full = fields.Boolean(
        help="It started as its queue ran as many jobs as its concurrency allows: only such "
        "successes raise an adaptive queue's concurrency"
    )
    error_message = fields.Text()
    duration = fields.Float(
        compute="_compute_duration", store=True, precompute=True, help="Seconds"
    )
    provider_id = fields.Many2one(
        "llm.provider",
        compute="_compute_provider_id",
        store=True,
        precompute=True,
        ondelete="cascade",
        help="Its job's provider: the queue of the metrics",
    )
    time_to_first_token = fields.Float(
        compute="_compute_time_to_first_token",
        store=True,
        precompute=True,
        help="Seconds from its start to its first piece of reply (empty: none streamed)",
    )

    @api.depends("started_at", "ended_at")
    def _compute_duration(self):
        for attempt in self:
            ended, started = attempt.ended_at, attempt.started_at
            attempt.duration = (ended - started).total_seconds() if ended and started else 0.0

    @api.depends("job_id.provider_id")
    def _compute_provider_id(self):
        for attempt in self:
            attempt.provider_id = attempt.job_id.provider_id

    @api.depends("started_at", "first_token_at")
    def _compute_time_to_first_token(self):
        for attempt in self:
            attempt.time_to_first_token = self._seconds_to_first_token(
                attempt.started_at, attempt.first_token_at
            )

    @staticmethod
    def _seconds_to_first_token(started, first) -> float | bool:
        """Seconds from ``started`` to ``first`` (never below 0); False without both. The job
        store writes it with ``first_token_at`` from the start its lease holds, so that the
        stamp needs no read of the attempt first."""
        return max((first - started).total_seconds(), 0.0) if first and started else False
