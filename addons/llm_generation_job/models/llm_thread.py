"""Queued generation on threads: ``generate_response(..., use_queue=...)`` and job stats.

``use_queue``:

- ``False``: stream directly from the provider in this process (llm_thread's behaviour);
- ``True``: create a job in the provider's queue, let a worker generate the reply, and yield
  its progress with the same update shapes as direct mode (see ``follow.py``);
- ``None`` (default): queued when the provider's ``get_generation_queue_info()`` says
  ``supports_queue`` (by default: the provider has an enabled queue) and a live worker serves
  that queue, else direct. The first update says which way it went and why::

      {'type': 'generation_mode', 'mode': 'queued' | 'direct', 'reason': '...'}

``execution_mode`` (queued only; default: as the provider's queue says): ``"stream"`` (a
worker streams the reply), ``"batch"`` (a request of a provider batch: half the price, within
the provider's window, up to 24 hours) or ``"background"`` (an OpenAI background response,
which a worker taking over a dead worker's job re-attaches to). Asking for one queues the
generation.

A thread generates one reply at a time: while one of its jobs is queued, running or waiting
for its automatic retry, another generation (queued or direct) is refused.
"""

from __future__ import annotations

from addons.llm_thread import updates
from core import UserError, fields, models

from ..follow import follow_job
from ..store import JobStore


class LLMThread(models.Model):
    _inherit = "llm.thread"

    generation_job_ids = fields.One2many("llm.generation.job", "thread_id", string="Jobs")

    def generate_response(self, user_message=None, use_queue=None, execution_mode=None, **options):
        self.ensure_one()
        if execution_mode and use_queue is False:
            raise UserError(
                f"execution_mode '{execution_mode}' is how a queued job runs: leave use_queue "
                "out (or true) to queue the generation, or leave execution_mode out."
            )
        if execution_mode and use_queue is None:
            use_queue = True
            yield {
                "type": "generation_mode",
                "mode": "queued",
                "reason": f"execution_mode '{execution_mode}' was asked for",
            }
        if use_queue is None:
            use_queue, reason = self._generation_mode()
            yield {
                "type": "generation_mode",
                "mode": "queued" if use_queue else "direct",
                "reason": reason,
            }
        if not use_queue:
            self._refuse_if_generating()
            yield from super().generate_response(user_message, **options)
            return
        job = self._queue_generation(user_message, options, execution_mode)
        posted = updates.message_payload(job.input_message_id) if job.input_message_id else None
        job_id = job.id
        self.env.cr.commit()  # the worker must see the job; nothing is read after this, so no
        if posted:  # transaction stays open while the consumer holds the generator
            yield updates.message_create(posted)
        yield from follow_job(self.env, job_id)

    def _generation_mode(self) -> tuple[bool, str]:
        """Whether ``use_queue=None`` queues, and why."""
        provider = self.provider_id.sudo()
        info = provider.get_generation_queue_info()
        if not info.get("supports_queue"):
            return False, f"provider '{provider.name}' has no enabled queue"
        workers = info.get("live_workers", 0)
        if not workers:
            return False, (
                f"no worker is running for the queue of provider "
                f"'{provider.name}' (start one with `llmjobs worker`)"
            )
        return True, (
            f"provider '{provider.name}' has an enabled queue served by {workers} "
            f"live worker{'s' if workers > 1 else ''}"
        )

    def _queue_generation(self, user_message, options, execution_mode=None):
        """Post the user message and queue a job for the reply (one unit of work: when it
        begins the transaction, no savepoint)."""
        with self.env.cr.atomic():
            self._check_generation_options(options)  # before anything is written
            # "Is a job active? then queue one", once per thread at a time.
            self.lock_for_update(read=True)
            self._refuse_if_generating()
            input_message = (
                self.message_post(body=user_message, llm_role="user")
                if user_message
                else self.env["llm.message"]
            )
            values = {
                "thread_id": self.id,
                "input_message_id": input_message.id or False,
                "generation_inputs": {"user_message": user_message, "options": options},
            }
            if execution_mode:
                values["execution_mode"] = execution_mode
            job = self.env["llm.generation.job"].create(values)
            job.action_queue()
        return job

    def _refuse_if_generating(self):
        """UserError while a job of this thread is queued, running or waiting for its
        automatic retry."""
        busy = JobStore(self.env).busy_job(self.id)
        if busy:
            waiting = "waiting for its retry" if busy.state == "failed" else busy.state
            raise UserError(
                f"Thread '{self.name}' is already generating a response (job {busy.id} is "
                f"{waiting}); wait for it to finish or cancel it."
            )
