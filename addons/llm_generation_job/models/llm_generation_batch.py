"""Provider batches: jobs whose replies a provider generates together, as one batch of its own
(OpenAI Batch, Anthropic Message Batches), within its window and at its batch price.

A batch row is what a manager reads about one submission: the provider's id for it, its own
word for the batch's status and its request counts, when it was submitted, last polled and
ended, and its jobs. States::

    submitting --(the provider accepted it)--> running --(ended: results applied)--> ended
        |
        +--(the provider refused it, or its submitter died before it was recorded)--> failed

Only the job store writes batches (``store.py``: ``open_batch``, ``batch_submitted``,
``apply_batch``...); ``batches.py`` talks to the provider.
"""

from core import fields, models

STATES = [
    ("submitting", "Submitting"),
    ("running", "Running at the provider"),
    ("ended", "Ended (results applied)"),
    ("failed", "Failed (not submitted)"),
]


class GenerationBatch(models.Model):
    _name = "llm.generation.batch"
    _description = "LLM provider batch"
    _order = "id desc"

    provider_id = fields.Many2one("llm.provider", required=True, ondelete="cascade", index=True)
    protocol = fields.Char(required=True, help="The batch protocol: openai or anthropic")
    state = fields.Selection(STATES, default="submitting", required=True, index=True)
    external_id = fields.Char(index=True, help="The provider's id for the batch")
    provider_status = fields.Char(help="The batch's status in the provider's own word")
    request_counts = fields.Json(help="The provider's request counts, as it gave them")
    provider_data = fields.Json(help="File ids and times the provider reported")
    error_message = fields.Text()
    submission_key = fields.Char(
        required=True, help="Tags the batch at the provider, so that it can be found again"
    )
    submit_token = fields.Char(help="The submitter's claim on a batch being submitted")
    submit_expires_at = fields.Datetime(help="When a submission not recorded is taken over")
    request_count = fields.Integer(help="Requests submitted")
    submitted_at = fields.Datetime()
    last_polled_at = fields.Datetime()
    cancel_sent_at = fields.Datetime(help="When it was cancelled at the provider (no job left)")
    ended_at = fields.Datetime()
    job_ids = fields.One2many("llm.generation.job", "batch_id", string="Jobs")
