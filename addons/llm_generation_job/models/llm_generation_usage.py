"""The usage ledger: one row per attempt of a job (streamed, in a batch or as a background
response; completed, failed, cancelled, lost or handed back), with the tokens the provider
reported (or, when it reported none, an estimate marked so) and their cost by the model's
prices.

A row is written by the job store in the transaction that ends its attempt (``store.py``:
``_close_attempts``), so spend and job state never disagree; nobody else writes it. It stays
when the cleanup deletes its job (budgets count a whole month). Users read their own rows,
managers every row.
"""

from core import api, fields, models

from .llm_generation_job import EXECUTION_MODES

OUTCOMES = [
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
    ("lost", "Lost"),
    ("interrupted", "Interrupted"),
]


class GenerationUsage(models.Model):
    _name = "llm.generation.usage"
    _description = "LLM usage ledger"
    _order = "id desc"
    _sql_constraints = [
        ("attempt_unique", "unique(attempt_id)", "An attempt is in the ledger once."),
    ]

    # The ledger outlives the jobs the cleanup deletes: a month's budget counts a month.
    attempt_id = fields.Many2one("llm.generation.job.attempt", ondelete="set null", index=True)
    job_id = fields.Many2one("llm.generation.job", ondelete="set null", index=True)
    user_id = fields.Many2one("res.users", required=True, ondelete="cascade", index=True)
    provider_id = fields.Many2one("llm.provider", required=True, ondelete="cascade", index=True)
    model_id = fields.Many2one("llm.model", ondelete="set null", index=True)
    thread_id = fields.Many2one("llm.thread", ondelete="set null", index=True)
    execution_mode = fields.Selection(EXECUTION_MODES, required=True)
    outcome = fields.Selection(OUTCOMES, required=True)
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    cached_tokens = fields.Integer(help="Of the prompt tokens, those read from the cache")
    estimated = fields.Boolean(help="The provider reported no usage: the tokens are estimated")
    cost = fields.Float(help="USD, by the model's prices when the attempt ended")
    priced = fields.Boolean(help="The model had prices (else the cost is 0)")
    ended_at = fields.Datetime(required=True, index=True)
    total_tokens = fields.Integer(compute="_compute_total_tokens", store=True, precompute=True)

    @api.depends("prompt_tokens", "completion_tokens")
    def _compute_total_tokens(self):
        for row in self:
            row.total_tokens = (row.prompt_tokens or 0) + (row.completion_tokens or 0)
