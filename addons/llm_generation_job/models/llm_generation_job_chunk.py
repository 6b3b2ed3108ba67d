"""The stream log of a job: the pieces of its reply, saved while it streams, in order.

One row per saved piece (kind ``text``), numbered per job (``seq``, from 1). A new attempt
replacing an earlier one begins with a ``restart`` row, so that a follower shows the reply
starting over rather than merging two attempts' texts. A follower reads only what is new
(``seq`` above the last it saw) and may resume from any ``seq`` (the HTTP API's
``Last-Event-ID``). The reply message's body is written once, when the attempt ends; while
the reply streams, the log is the reply. Only the job store writes it.
"""

from core import fields, models

KINDS = [("text", "Text"), ("restart", "Restart (a new attempt begins)")]


class GenerationJobChunk(models.Model):
    _name = "llm.generation.job.chunk"
    _description = "LLM generation job stream log"
    _order = "job_id, seq"
    _sql_constraints = [
        ("job_seq_unique", "unique(job_id, seq)", "A stream log numbers each piece once."),
    ]

    job_id = fields.Many2one("llm.generation.job", required=True, ondelete="cascade")
    seq = fields.Integer(required=True, help="1, 2, 3... per job")
    kind = fields.Selection(KINDS, required=True, default="text")
    attempt = fields.Integer(help="The number of the attempt that streamed it")
    content = fields.Text()
    cursor = fields.Integer(
        help="A background response's sequence number of the piece's last event: a worker "
        "taking the job over re-attaches after the last one logged"
    )
