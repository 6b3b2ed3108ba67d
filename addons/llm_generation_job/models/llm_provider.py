"""Generation-job hooks on providers.

Each hook dispatches to ``<service>_<hook>`` when the service defines it (an addon adding a
provider with an asynchronous job API implements ``myservice_create_generation_job`` and
friends, as llm_thread's services implement ``<service>_chat``), and otherwise falls back to
the default, which runs the generation inside the worker by streaming from the provider: so
every provider of llm_thread can be queued with no extra code.

- ``create_generation_job(job)``: start the job; return the provider's external job id, or
  None when the generation ran to the end in the worker (the default).
- ``check_generation_job_status(job)``: ``{'state': 'running'|'completed'|'failed'|'queued',
  'output_message_id': id?, 'error_message': str?, 'provider_data': dict?}``.
- ``cancel_generation_job(job)``: ask the provider to stop; returns whether it accepted.
- ``get_generation_queue_info()``: limits, capabilities and live workers (see the method).

The hooks get the job in superuser mode: they run for whoever asked (a worker, the status
cron, a user's status loop) after the job store checked that caller's rights.
"""

from __future__ import annotations

from addons.llm_thread import wire
from core import fields, models

from ..execution import stream_job_in_worker


class LLMProvider(models.Model):
    _inherit = "llm.provider"

    generation_queue_ids = fields.One2many("llm.generation.queue", "provider_id", string="Queue")

    def _job_hook(self, hook: str):
        """The service's own implementation of ``hook``, or None."""
        self.ensure_one()
        return getattr(self, f"{self.service}_{hook}", None)

    def create_generation_job(self, job_record):
        implementation = self._job_hook("create_generation_job")
        if implementation is not None:
            return implementation(job_record)
        stream_job_in_worker(job_record)
        return None

    def check_generation_job_status(self, job_record):
        implementation = self._job_hook("check_generation_job_status")
        if implementation is not None:
            return implementation(job_record)
        status = {"state": job_record.state}
        if job_record.output_message_id:
            status["output_message_id"] = job_record.output_message_id.id
        if job_record.error_message:
            status["error_message"] = job_record.error_message
        at_provider = job_record._provider_job()
        if at_provider:
            status["provider_data"] = at_provider
        return status

    def cancel_generation_job(self, job_record):
        implementation = self._job_hook("cancel_generation_job")
        if implementation is not None:
            return implementation(job_record)
        return True  # a streaming job stops when its worker sees the cancellation

    def _execution_mode_refusal(self, mode: str) -> str | None:
        """Why this provider cannot run generation jobs in execution ``mode``; None when it
        can."""
        self.ensure_one()
        protocol = self._builtin_protocol() if self._streams_in_worker() else None
        if mode == "stream":
            return None
        if mode == "batch":
            if protocol in wire.BATCH_PROTOCOLS:
                return None
            return (
                f"provider '{self.name}' (service {self.service}) has no batch API that jobs "
                f"can use (services {' and '.join(wire.BATCH_PROTOCOLS)} do); use 'stream'."
            )
        if mode == "background":
            if protocol == "openai":
                return None
            return (
                f"provider '{self.name}' (service {self.service}) cannot run background "
                "responses (the openai service can); use 'stream'."
            )
        return f"'{mode}' is not an execution mode (stream, batch or background)."

    def _streams_in_worker(self) -> bool:
        """Whether jobs of this provider stream in the worker (no override of the job API)."""
        return (
            self._job_hook("create_generation_job") is None
            and type(self).create_generation_job is LLMProvider.create_generation_job
        )

    def get_generation_queue_info(self):
        """``max_concurrent_jobs``, ``current_queue_size`` (queued jobs),
        ``estimated_wait_time`` (seconds: backlog x average processing time / concurrency),
        ``supports_streaming``, ``supports_cancellation``, ``supports_queue``: whether
        generations of this provider go through its queue by default (its queue exists and
        is enabled), ``live_workers``: how many live workers serve that queue, and (with a
        queue) its ``execution_mode`` and whether it sends unattended jobs in provider
        batches (``batch_unattended``). Any user may ask (nothing in it is secret)."""
        self.ensure_one()
        provider = self.sudo()
        implementation = provider._job_hook("get_generation_queue_info")
        if implementation is not None:
            return implementation()
        queue = provider.env["llm.generation.queue"].search(
            [("provider_id", "=", provider.id)], limit=1
        )
        live = provider.env["llm.generation.worker"].live_count(provider.id)
        if not queue:
            return {
                "max_concurrent_jobs": 0,
                "current_queue_size": 0,
                "estimated_wait_time": 0.0,
                "supports_streaming": True,
                "supports_cancellation": True,
                "supports_queue": False,
                "live_workers": live,
            }
        stats = queue.get_queue_stats(window_hours=1)
        average = stats["performance"]["avg_processing_time"]
        backlog = queue.queued_jobs_count
        return {
            "max_concurrent_jobs": queue.max_concurrent_jobs,
            "current_queue_size": backlog,
            "estimated_wait_time": backlog * average / max(queue.max_concurrent_jobs, 1),
            "supports_streaming": provider._streams_in_worker(),
            "supports_cancellation": True,
            "supports_queue": queue.enabled,
            "live_workers": live,
            "execution_mode": queue.execution_mode,
            "batch_unattended": queue.batch_unattended,
        }
