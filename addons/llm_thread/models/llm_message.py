"""Messages of a thread: what the user, the assistant, tools and the system said."""

from core import fields, models

ROLES = [("system", "System"), ("user", "User"), ("assistant", "Assistant"), ("tool", "Tool")]
STATES = [
    ("streaming", "Streaming"),
    ("done", "Done"),
    ("error", "Error"),
    ("cancelled", "Cancelled"),
]


class LLMMessage(models.Model):
    _name = "llm.message"
    _description = "LLM message"
    _order = "id"

    thread_id = fields.Many2one("llm.thread", required=True, ondelete="cascade", index=True)
    llm_role = fields.Selection(ROLES, required=True, index=True)
    body = fields.Text()
    body_json = fields.Json(help="Structured content, e.g. tool calls")
    author_id = fields.Many2one("res.users", ondelete="set null")
    state = fields.Selection(STATES, default="done", required=True)
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    finish_reason = fields.Char()
    provider_metadata = fields.Json()
    error = fields.Text(help="Why the reply is incomplete (provider error, cancellation)")
