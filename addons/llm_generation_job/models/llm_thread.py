"""Queued generation on threads: ``generate_response(..., use_queue=...)`` and job stats.

``use_queue``:

- ``False``: stream directly from the provider in this process (llm_thread's behaviour);
- ``True``: create a job in the provider's queue, let a worker generate the reply, and yield
  its progress with the same update shapes as direct mode (see ``follow.py``);
- ``None`` (default): queued when the provider's ``get_generation_queue_info()`` says
  ``supports_queue`` — by default, when the provider has an enabled queue — else direct.
"""

from __future__ import annotations

from addons.llm_thread import updates
from core import UserError, fields, models

from ..follow import follow_job
from .llm_generation_job import ACTIVE_STATES


class LLMThread(models.Model):
    _inherit = "llm.thread"

    generation_job_ids = fields.One2many("llm.generation.job", "thread_id", string="Jobs")

    def generate_response(self, user_message=None, use_queue=None, **options):
        self.ensure_one()
        if use_queue is None:
            use_queue = bool(self.provider_id.get_generation_queue_info().get("supports_queue"))
        if not use_queue:
            self._refuse_if_generating()
            yield from super().generate_response(user_message, **options)
            return
        job = self._queue_generation(user_message, options)
        posted = updates.message_payload(job.input_message_id) if job.input_message_id else None
        job_id = job.id
        self.env.cr.commit()  # the worker must see the job; nothing is read after this, so no
        if posted:            # transaction stays open while the consumer holds the generator
            yield updates.message_create(posted)
        yield from follow_job(self.env, job_id)

    def _queue_generation(self, user_message, options):
        """Post the user message and queue a job for the reply (one transaction)."""
        self._lock_for_generation()
        self._refuse_if_generating()
        input_message = self.message_post(body=user_message, llm_role="user") \
            if user_message else self.env["llm.message"]
        job = self.env["llm.generation.job"].create({
            "thread_id": self.id,
            "user_id": self.env.uid,
            "input_message_id": input_message.id or False,
            "generation_inputs": {"user_message": user_message, "options": options},
        })
        job.action_queue()
        return job

    def _refuse_if_generating(self):
        """UserError while a job of this thread is queued or running."""
        busy = self.env["llm.generation.job"].sudo().search(
            [("thread_id", "=", self.id), ("state", "in", list(ACTIVE_STATES))], limit=1)
        if busy:
            raise UserError(
                f"Thread '{self.name}' is already generating a response (job {busy.id} is "
                f"{busy.state}); wait for it to finish or cancel it."
            )

    def _lock_for_generation(self):
        """Serialise "is a job active? then queue one" per thread across processes: the
        thread's row is locked until commit (SQLite: the transaction's write lock)."""
        table = self._table_obj
        self.env.cr.execute(
            table.select().with_only_columns(table.c.id).where(table.c.id == self.id)
            .with_for_update()
        )
