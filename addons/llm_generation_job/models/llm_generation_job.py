"""Generation jobs: one assistant reply of a thread, produced by a worker.

States and the transitions the ``action_*`` methods allow (anything else is a UserError)::

    draft --action_queue--> queued --claim/action_start--> running --action_complete--> completed
                             |   ^                          |   |
                action_cancel|   | lease expired,           |   +--action_fail--> failed
                             v   | retries left            |                      |
                         cancelled <---action_cancel--------+     action_retry ---+ (-> queued)

A running job belongs to one *attempt* (``llm.generation.job.attempt``) and carries that
attempt's lease: a random token and an expiry the worker renews by heartbeat. Every write a
worker makes on a running job — progress, completion, failure — is conditional on the token
(``WHERE lease_token = :token``), so a worker whose lease was taken over (it stalled, the
status cron requeued the job) can no longer change the job or post its reply: each job gets
exactly one reply, whatever process dies when.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

import sqlalchemy as sa

from core import UserError, api, fields, models

from .. import backoff
from ..notify import CANCEL, PROGRESS, QUEUED, notifier_for

_logger = logging.getLogger(__name__)

STATES = [
    ("draft", "Draft"),
    ("queued", "Queued"),
    ("running", "Running"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
]
ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("completed", "failed", "cancelled")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GenerationJob(models.Model):
    _name = "llm.generation.job"
    _description = "LLM generation job"
    _order = "create_date desc, id desc"

    name = fields.Char(compute="_compute_name", store=True)
    thread_id = fields.Many2one("llm.thread", required=True, ondelete="cascade", index=True)
    provider_id = fields.Many2one("llm.provider", required=True, ondelete="cascade", index=True)
    model_id = fields.Many2one("llm.model", ondelete="set null")
    user_id = fields.Many2one(
        "res.users", required=True, ondelete="cascade", index=True,
        default=lambda self: self.env.uid,
    )
    state = fields.Selection(STATES, default="draft", required=True, index=True)
    generation_inputs = fields.Json(help="What the generation was asked for (options, prompt)")
    input_message_id = fields.Many2one("llm.message", ondelete="set null")
    output_message_id = fields.Many2one("llm.message", ondelete="set null")
    external_job_id = fields.Char(index=True, help="The provider's id for an asynchronous job")
    provider_data = fields.Json(help="Provider metadata (e.g. an external job's status)")
    priority = fields.Integer(default=0, index=True, help="Higher runs first")
    retry_count = fields.Integer(default=0)
    max_retries = fields.Integer(default=3)
    next_retry_at = fields.Datetime(help="When a failed job will be retried automatically")
    error_message = fields.Text()
    error_kind = fields.Selection([("retryable", "Retryable"), ("permanent", "Permanent")])
    queued_at = fields.Datetime(index=True)
    started_at = fields.Datetime()
    completed_at = fields.Datetime(index=True)
    queue_duration = fields.Float(compute="_compute_durations", store=True, help="Seconds")
    duration = fields.Float(compute="_compute_durations", store=True, help="Seconds")
    is_active = fields.Boolean(compute="_compute_is_active", store=True, index=True)
    can_retry = fields.Boolean(compute="_compute_flags")
    can_cancel = fields.Boolean(compute="_compute_flags")
    attempt_ids = fields.One2many("llm.generation.job.attempt", "job_id", string="Attempts")
    # Lease of the running attempt (see the module docstring).
    lease_token = fields.Char(copy=False)
    lease_expires_at = fields.Datetime(index=True, copy=False)
    cancel_requested = fields.Boolean(copy=False)

    # -- computed fields ---------------------------------------------------------------------
    @api.depends("thread_id.name", "model_id.name")
    def _compute_name(self):
        for job in self:
            parts = [job.thread_id.name, job.model_id.name]
            job.name = " - ".join(p for p in parts if p) or "Generation job"

    @api.depends("queued_at", "started_at", "completed_at")
    def _compute_durations(self):
        for job in self:
            job.queue_duration = _seconds(job.queued_at, job.started_at)
            job.duration = _seconds(job.started_at, job.completed_at)

    @api.depends("state")
    def _compute_is_active(self):
        for job in self:
            job.is_active = job.state in ACTIVE_STATES

    @api.depends("state", "retry_count", "max_retries")
    def _compute_flags(self):
        for job in self:
            job.can_retry = job.state == "failed" and job.retry_count < job.max_retries
            job.can_cancel = job.state in ACTIVE_STATES

    # -- creation ----------------------------------------------------------------------------
    @api.model_create_multi
    def create(self, vals_list):
        threads = self.env["llm.thread"]
        for vals in vals_list:
            if vals.get("thread_id") and not vals.get("provider_id"):
                thread = threads.browse(vals["thread_id"])
                vals["provider_id"] = thread.provider_id.id
                vals.setdefault("model_id", thread.model_id.id)
            elif vals.get("thread_id") and not vals.get("model_id"):
                vals["model_id"] = threads.browse(vals["thread_id"]).model_id.id
        return super().create(vals_list)

    # -- transitions -------------------------------------------------------------------------
    def _require_state(self, allowed: tuple[str, ...], action: str) -> None:
        self.ensure_one()
        if self.state not in allowed:
            raise UserError(
                f"Cannot {action} generation job {self.id}: it is {self.state}; only "
                f"{' or '.join(allowed)} jobs can be {_PAST[action]}."
            )

    def action_queue(self):
        """Put a draft job in its provider's queue; a worker picks it up at once."""
        self._require_state(("draft",), "queue")
        queue = self.env["llm.generation.queue"]._get_or_create_queue(self.provider_id.id)
        self.write({"state": "queued", "queued_at": _now(), "next_retry_at": False})
        self._wake_workers(queue)
        return True

    def action_start(self):
        """Start this queued job now: claim it, commit, and run its attempt — on this
        process's worker runner when there is one, else here, returning when it is done.
        Raises when its queue is paused or full, or another worker took it first."""
        self._require_state(("queued",), "start")
        from ..claim import claim_job, worker_name
        from ..execution import run_attempt
        from ..runner import active_runner

        lease = claim_job(self.env, self, worker=worker_name())
        if lease is None:
            raise UserError(
                f"Job {self.id} cannot start now: its queue is paused or at its concurrency "
                "limit, or another worker took it."
            )
        self.env.cr.commit()
        runner = active_runner(self.pool)
        if runner:
            runner.submit(lease)
        else:
            run_attempt(self.pool, lease)
        return True

    def action_cancel(self):
        """Cancel a queued or running job; a running stream is closed at once and its
        partial reply is kept, marked cancelled."""
        self._require_state(ACTIVE_STATES, "cancel")
        if self.state == "queued":
            self._finish("cancelled", error="Cancelled before it started.")
            return True
        if self.external_job_id:
            try:
                self.provider_id.cancel_generation_job(self)
            except Exception as exc:  # the provider's side is best effort; ours is not
                _logger.warning("Provider could not cancel job %s: %s", self.id, exc)
        self.write({"cancel_requested": True})
        notifier_for(self.pool).send(self.env.cr, CANCEL, self.id)
        if not self.lease_token or self.external_job_id:
            self._finish("cancelled", error="Cancelled while running.")
        return True

    def action_retry(self):
        """Queue a failed job again (a new attempt), if it has retries left."""
        self.ensure_one()
        if not self.can_retry:
            reason = (
                f"it is {self.state}" if self.state != "failed"
                else f"it used its {self.max_retries} retries"
            )
            raise UserError(f"Cannot retry generation job {self.id}: {reason}.")
        self.write({
            "state": "queued", "retry_count": self.retry_count + 1, "queued_at": _now(),
            "started_at": False, "completed_at": False, "error_message": False,
            "error_kind": False, "external_job_id": False, "next_retry_at": False,
            "cancel_requested": False,
        })
        self._wake_workers(self.env["llm.generation.queue"]._get_or_create_queue(
            self.provider_id.id))
        return True

    def action_complete(self, output_message_id=None):
        """Mark a running job completed (e.g. from a provider status check)."""
        self._require_state(("running",), "complete")
        self._finish("completed", output_message_id=output_message_id)
        return True

    def action_fail(self, error_message=None):
        """Mark a queued or running job failed, with the reason."""
        self._require_state(ACTIVE_STATES, "fail")
        self._finish("failed", error=error_message or "Failed.", error_kind="permanent")
        return True

    def _finish(self, state: str, *, error: str | None = None, error_kind: str | None = None,
                output_message_id: int | None = None) -> None:
        """Close the job (and its running attempt) in ``state``."""
        vals: dict[str, Any] = {
            "state": state, "completed_at": _now(), "lease_token": False,
            "lease_expires_at": False,
        }
        if error is not None:
            vals.update(error_message=error, error_kind=error_kind or False)
        if output_message_id:
            vals["output_message_id"] = output_message_id
        self.write(vals)
        self.attempt_ids.filtered(lambda a: a.outcome == "running").write({
            "outcome": state, "ended_at": _now(), "error_message": error or False,
        })
        message = self.output_message_id
        if message and state in ("failed", "cancelled") and message.state not in ("done",):
            message.write({"state": "cancelled" if state == "cancelled" else "error",
                           "error": error or False})
        notifier_for(self.pool).send(self.env.cr, PROGRESS, self.id)

    def _wake_workers(self, queue) -> None:
        notifier = notifier_for(self.pool)
        notifier.send(self.env.cr, QUEUED, queue.provider_id.id)
        notifier.send(self.env.cr, PROGRESS, self.id)

    def _queue_position(self) -> int:
        """1 + the queued jobs of the same provider that a worker will take before this one."""
        self.ensure_one()
        before = [
            "|", ("priority", ">", self.priority),
            "&", ("priority", "=", self.priority),
            "|", ("queued_at", "<", self.queued_at),
            "&", ("queued_at", "=", self.queued_at), ("id", "<", self.id),
        ]
        return 1 + self.sudo().search_count(
            [("provider_id", "=", self.provider_id.id), ("state", "=", "queued"), *before])

    # -- status and maintenance --------------------------------------------------------------
    def check_status(self, wait: float = 0.5):
        """The job's status as the provider reports it (a dict, see llm_provider), applied to
        the job; False when the job is not running.

        It commits the current transaction first, so that it sees the worker's progress (and,
        on SQLite, does not hold the lock the worker needs), and waits up to ``wait`` seconds
        for progress of an active job, so a loop ``while job.state in ('queued', 'running'):
        job.check_status()`` neither spins nor stops seeing changes."""
        self.ensure_one()
        notifier = notifier_for(self.pool)
        notifier.listen()
        since = notifier.generation(PROGRESS, self.id)
        follow = self.state in ACTIVE_STATES and not self.external_job_id
        self.env.cr.commit()  # nothing may be read until the wait ends: a read would start a
        if follow:            # transaction that (on SQLite) holds the lock the worker needs
            notifier.wait(PROGRESS, self.id, since, wait)
        if self.state != "running":
            return False
        try:
            status = self.provider_id.check_generation_job_status(self)
        except Exception as exc:
            _logger.warning("Status check of generation job %s failed: %s", self.id, exc)
            return False
        if self.external_job_id and status:
            self._apply_status(status)
            self.env.cr.commit()
        return status

    def _apply_status(self, status: dict) -> None:
        """Apply a provider status dict (``state``, ``output_message_id``, ``error_message``,
        ``provider_data``) to this running job."""
        if status.get("provider_data") is not None:
            self.provider_data = status["provider_data"]
        state = status.get("state")
        if state == "running" or self.state != "running":
            return
        if state == "completed":
            self.action_complete(status.get("output_message_id"))
        elif state == "failed":
            self._fail_attempt(status.get("error_message") or "The provider reported a failure.",
                               retryable=bool(status.get("retryable")))
        elif state == "queued":
            self.write({"state": "queued", "started_at": False, "lease_token": False,
                        "lease_expires_at": False})

    def _fail_attempt(self, error: str, *, retryable: bool,
                      retry_after: float | None = None) -> None:
        """End the running attempt with an error: schedule an automatic retry when the error
        is retryable and retries are left, else fail for good."""
        queue = self.env["llm.generation.queue"]._get_or_create_queue(self.provider_id.id)
        self._finish("failed", error=error, error_kind="retryable" if retryable else "permanent")
        if retryable and self.retry_count < self.max_retries and queue.auto_retry_failed:
            delay = backoff.retry_delay(self.retry_count, queue.retry_delay_minutes, retry_after)
            self.next_retry_at = _now() + dt.timedelta(seconds=delay)

    @api.model
    def cleanup_old_jobs(self, days=7, batch_size=1000):
        """Delete finished jobs created more than ``days`` days ago, in batches (each batch
        committed). Returns how many were deleted."""
        cutoff = _now() - dt.timedelta(days=days)
        domain = [("state", "in", list(FINISHED_STATES)), ("create_date", "<", cutoff)]
        deleted = 0
        while True:
            batch = self.search(domain, limit=batch_size, order="id")
            if not batch:
                return deleted
            batch.unlink()
            deleted += len(batch)
            self.env.cr.commit()

    # -- used by the worker (execution.py) ---------------------------------------------------
    @staticmethod
    def _new_lease_token() -> str:
        return secrets.token_hex(16)

    def _renew_lease(self, token: str, allow_cancelled: bool = False) -> bool:
        from ..claim import LEASE_SECONDS

        return self._fenced_update(
            token, {"lease_expires_at": _now() + dt.timedelta(seconds=LEASE_SECONDS)},
            allow_cancelled=allow_cancelled,
        )

    def _prepare_generation(self, token: str) -> dict[str, Any]:
        """What the worker needs to stream this job's reply, plus the (empty) reply message:
        created on the first attempt, reused by later ones (one reply per job)."""
        self.ensure_one()
        thread = self.thread_id
        messages = thread._conversation(until=self.input_message_id)
        reply = self.output_message_id
        if reply:
            reply.write({"body": "", "state": "streaming", "error": False})
        else:
            reply = thread.message_post(body="", llm_role="assistant", state="streaming")
            self._fenced_update(token, {"output_message_id": reply.id}, allow_cancelled=True)
        inputs = self.generation_inputs or {}
        if not self.input_message_id and inputs.get("prompt"):
            # A job created with a prompt rather than a posted message (the contract's
            # "Create a job" example): the prompt is the user's turn.
            messages.append({"role": "user", "content": str(inputs["prompt"])})
        return {
            "provider_id": self.provider_id.id,
            "model": self.model_id.name or None,
            "messages": messages,
            "options": dict(inputs.get("options") or {}),
            "timeout": self.provider_id.timeout or None,
            "message_id": reply.id,
        }

    def _complete_attempt(self, token: str, message_id: int, message_values: dict) -> bool:
        """Fenced completion: the job, its reply and its attempt, or nothing."""
        now = _now()
        done = self._fenced_update(token, {
            "state": "completed", "completed_at": now, "output_message_id": message_id,
            "lease_token": False, "lease_expires_at": False, "error_message": False,
            "error_kind": False, "next_retry_at": False,
        })
        if not done:
            return False
        self.env["llm.message"].browse(message_id).write(message_values)
        self.attempt_ids.filtered(lambda a: a.outcome == "running").write(
            {"outcome": "completed", "ended_at": now})
        return True

    def _fenced_update(self, token: str, values: dict[str, Any], *,
                       allow_cancelled: bool = False) -> bool:
        """UPDATE this running job only if ``token`` still holds its lease (and, unless
        ``allow_cancelled``, no cancellation was requested). Returns whether it did."""
        table = self._table_obj
        condition = [table.c.id == self.id, table.c.lease_token == token,
                     table.c.state == "running"]
        if not allow_cancelled:
            condition.append(sa.not_(sa.func.coalesce(table.c.cancel_requested, False)))
        columns = {
            name: self._fields[name].convert_to_column(self._fields[name].convert_to_cache(v, self))
            for name, v in values.items()
        }
        columns["write_date"] = _now()
        result = self.env.cr.execute(sa.update(table).where(*condition).values(columns))
        self.env.cache.invalidate(ids=self._ids)
        if result.rowcount != 1:
            return False
        self.pool.triggers.after_change(self, set(values))  # e.g. is_active, durations
        return True


_PAST = {
    "queue": "queued", "start": "started", "cancel": "cancelled", "complete": "completed",
    "fail": "failed",
}


def _seconds(start: dt.datetime | bool, end: dt.datetime | bool) -> float:
    if not start or not end:
        return 0.0
    return max((end - start).total_seconds(), 0.0)
