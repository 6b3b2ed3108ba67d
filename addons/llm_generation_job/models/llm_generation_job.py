"""Generation jobs: one assistant reply of a thread, produced by a worker.

States and the transitions the ``action_*`` methods allow (anything else is a UserError)::

    draft --action_queue--> queued --claim/action_start--> running --(worker)--> completed
                             |   ^                          |   |
                action_cancel|   | lease expired,           |   +--(worker)--> failed --+
                             v   | retries left             |        retry pending |   |
                         cancelled <---action_cancel--------+-----<--action_cancel-+   |
                                 ^                                    action_retry ----+
                                 |                                      (-> queued)

Every change of state, lease, timings, counters and outcome goes through the job store
(``store.py``), which fences each write of a worker by its attempt's lease: see there for what
is guaranteed. This model declares the fields, checks who may create and change a job, and
offers the actions:

- a user creates jobs on threads they may write (the job runs on the thread's provider, with a
  model of that provider), queues, cancels and retries their own jobs, and reads them;
- ``max_retries`` and priorities above the default are managers' to set; starting, completing
  or failing a job by hand is for managers;
- the fields of ``store.STORE_FIELDS`` cannot be written by anyone: they follow the actions.
"""

from __future__ import annotations

import datetime as dt
import logging

from core import AccessError, ValidationError, api, fields, models
from core.notify import notifier_for

from ..signals import CHANNELS, PROGRESS
from ..store import ACTIVE_STATES, STORE_FIELDS, JobStore

_logger = logging.getLogger(__name__)

STATES = [
    ("draft", "Draft"),
    ("queued", "Queued"),
    ("running", "Running"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
]
EXECUTION_MODES = [
    ("stream", "Streamed by a worker"),
    ("batch", "In a provider batch"),
    ("background", "As a background response at the provider"),
]
DEFAULT_PRIORITY = 0
MANAGER_GROUP = "llm_thread.group_llm_manager"
# Set when the job is created, never changed: a job belongs to its thread, provider and user.
CREATE_ONLY_FIELDS = frozenset(
    {"thread_id", "provider_id", "input_message_id", "user_id", "execution_mode", "interactive"}
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GenerationJob(models.Model):
    _name = "llm.generation.job"
    _description = "LLM generation job"
    _order = "create_date desc, id desc"

    name = fields.Char(compute="_compute_name", store=True, precompute=True)
    thread_id = fields.Many2one("llm.thread", required=True, ondelete="cascade", index=True)
    provider_id = fields.Many2one("llm.provider", required=True, ondelete="cascade", index=True)
    model_id = fields.Many2one("llm.model", ondelete="set null")
    user_id = fields.Many2one(
        "res.users",
        required=True,
        ondelete="cascade",
        index=True,
        default=lambda self: self.env.uid,
    )
    state = fields.Selection(STATES, default="draft", required=True, index=True)
    generation_inputs = fields.Json(help="What the generation was asked for (options, prompt)")
    input_message_id = fields.Many2one("llm.message", ondelete="set null")
    output_message_id = fields.Many2one("llm.message", ondelete="set null")
    external_job_id = fields.Char(index=True, help="The provider's id for an asynchronous job")
    provider_data = fields.Json(help="Provider metadata (e.g. an external job's status)")
    execution_mode = fields.Selection(
        EXECUTION_MODES,
        required=True,
        default="stream",
        help="How the reply is generated; when a job is created without one, its queue decides",
    )
    interactive = fields.Boolean(
        default=True,
        help="Someone follows the reply as it comes; a job that is not may go in a provider "
        "batch (the queue's batch_unattended)",
    )
    batch_id = fields.Many2one(
        "llm.generation.batch", ondelete="set null", index=True, help="Its provider batch"
    )
    waiting_reason = fields.Char(help="Why a queued job is not started yet (its budget...)")
    eligible_at = fields.Datetime(index=True, help="When a waiting job may start")
    reserved_cost = fields.Float(help="USD its running attempt is expected to cost (budgets)")
    priority = fields.Integer(default=DEFAULT_PRIORITY, index=True, help="Higher runs first")
    retry_count = fields.Integer(default=0)
    max_retries = fields.Integer(default=3)
    next_retry_at = fields.Datetime(
        index=True, help="When a failed job will be retried automatically"
    )
    error_message = fields.Text()
    error_kind = fields.Selection([("retryable", "Retryable"), ("permanent", "Permanent")])
    queued_at = fields.Datetime(index=True, help="When it first entered the queue")
    started_at = fields.Datetime()
    completed_at = fields.Datetime(index=True)
    queue_duration = fields.Float(
        compute="_compute_durations", store=True, precompute=True, help="Seconds"
    )
    duration = fields.Float(
        compute="_compute_durations", store=True, precompute=True, help="Seconds"
    )
    is_active = fields.Boolean(
        compute="_compute_is_active", store=True, precompute=True, index=True
    )
    can_retry = fields.Boolean(compute="_compute_flags")
    can_cancel = fields.Boolean(compute="_compute_flags")
    attempt_ids = fields.One2many("llm.generation.job.attempt", "job_id", string="Attempts")
    chunk_ids = fields.One2many("llm.generation.job.chunk", "job_id", string="Stream log")
    # The running attempt's lease (see store.py).
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

    @api.depends("state", "retry_count", "max_retries", "next_retry_at", "error_kind")
    def _compute_flags(self):
        for job in self:
            job.can_retry = job.state == "failed" and job.retry_count < job.max_retries
            job.can_cancel = job.state in ACTIVE_STATES or job._retry_pending()

    def _retry_pending(self) -> bool:
        return bool(
            self.state == "failed" and self.error_kind == "retryable" and self.next_retry_at
        )

    # -- who may create and change what ------------------------------------------------------
    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._check_writable(vals, creating=True)
            self._complete_from_thread(vals)
            self._check_inputs(vals.get("generation_inputs"))
            self._choose_execution_mode(vals)
        return super().create(vals_list)

    def write(self, vals):
        self._check_writable(vals)
        if "generation_inputs" in vals:
            self._check_inputs(vals["generation_inputs"])
        if "model_id" in vals:
            model_id = self._fields["model_id"].convert_to_cache(vals["model_id"]) or False
            vals = {**vals, "model_id": model_id}  # one id (or the field's type error)
            for job in self:
                job._check_model(vals["model_id"], job.provider_id.id)
        return super().write(vals)

    def _check_writable(self, vals: dict, creating: bool = False) -> None:
        kept = sorted(STORE_FIELDS & set(vals))
        if kept:
            raise AccessError(
                f"Field '{kept[0]}' of a generation job cannot be set: it follows the job's "
                "actions (action_queue, action_cancel, action_retry) and its worker."
            )
        fixed = sorted(CREATE_ONLY_FIELDS & set(vals)) if not creating else []
        if fixed:
            raise AccessError(
                f"Field '{fixed[0]}' of a generation job is set when the job is created and "
                "cannot change: create a new job instead."
            )
        if self._is_manager():
            return
        if "max_retries" in vals:
            raise AccessError("Only LLM managers may set 'max_retries' of a generation job.")
        priority = vals.get("priority") or DEFAULT_PRIORITY
        # A priority that is not a number gets the field's own type error when it is written.
        if isinstance(priority, int | float) and priority > DEFAULT_PRIORITY:
            raise AccessError(
                f"Only LLM managers may give a generation job a 'priority' above "
                f"{DEFAULT_PRIORITY} (the default); lower ones are yours to set."
            )

    def _check_inputs(self, inputs) -> None:
        """``generation_inputs``: a dict whose ``options`` the provider's request can carry
        (see llm.thread._check_generation_options)."""
        if not inputs:
            return
        if not isinstance(inputs, dict):
            raise ValidationError(
                "Field 'generation_inputs' of a generation job is a dict (prompt, options), "
                f"got {type(inputs).__name__}."
            )
        options = inputs.get("options") or {}
        if not isinstance(options, dict):
            raise ValidationError(
                "The 'options' of a generation job's inputs are a dict of request fields "
                f"(temperature, max_tokens...), got {type(options).__name__}."
            )
        self.env["llm.thread"]._check_generation_options(options)

    def _is_manager(self) -> bool:
        return self.env.su or self.env.user.has_group(MANAGER_GROUP)

    def _complete_from_thread(self, vals: dict) -> None:
        """The thread must be writable by the user; provider and model are the thread's (a
        model of that provider may be chosen); the input message must be of the thread."""
        for name in ("thread_id", "provider_id", "model_id", "input_message_id"):
            if name in vals:  # one id each, or the field's own type error, before they are used
                vals[name] = self._fields[name].convert_to_cache(vals[name]) or False
        if not vals.get("thread_id"):
            return  # the required field's own error follows
        thread = self.env["llm.thread"].browse(vals["thread_id"])
        thread.check_access("write")
        thread = thread.sudo()
        provider_id = thread.provider_id.id
        if vals.get("provider_id") and vals["provider_id"] != provider_id:
            raise ValidationError(
                f"Field 'provider_id' of a generation job must be its thread's provider "
                f"(id {provider_id}): a job runs on the provider of its thread. Leave it out, "
                "or change the thread's provider."
            )
        vals["provider_id"] = provider_id
        if vals.get("model_id"):
            self._check_model(vals["model_id"], provider_id)
        else:  # the model it will run on: its prices and limits apply
            vals["model_id"] = (thread.model_id or thread.provider_id._default_chat_model()).id
        message_id = vals.get("input_message_id")
        if message_id:
            message = self.env["llm.message"].browse(message_id)
            message.check_access("write")
            if message.sudo().thread_id.id != thread.id:
                raise ValidationError(
                    f"Field 'input_message_id' of a generation job must be a message of its "
                    f"thread (message {message_id} is not in thread {thread.id})."
                )

    def _choose_execution_mode(self, vals: dict) -> None:
        """The job's execution mode: the one asked for, if its provider can run it, else
        what its queue says (a job nobody follows goes in a batch when the queue batches
        unattended jobs)."""
        if not vals.get("provider_id"):
            return
        provider = self.env["llm.provider"].sudo().browse(vals["provider_id"])
        mode = vals.get("execution_mode")
        if not mode:
            queue = JobStore(self.env).queue(provider.id)  # (enqueue finds it again: no query)
            unattended = vals.get("interactive") is False and queue.batch_unattended
            vals["execution_mode"] = "batch" if unattended else queue.execution_mode
            return
        refusal = provider._execution_mode_refusal(mode)
        if refusal:
            raise ValidationError(f"Field 'execution_mode' of a generation job: {refusal}")

    def _check_model(self, model_id, provider_id: int) -> None:
        if model_id and self.env["llm.model"].sudo().browse(model_id).provider_id.id != provider_id:
            raise ValidationError(
                f"Field 'model_id' of a generation job must be a model of its provider "
                f"(model {model_id} is not one of provider {provider_id}'s)."
            )

    def _require_manager(self, action: str) -> None:
        if not self._is_manager():
            raise AccessError(
                f"Only LLM managers may {action} a generation job by hand; queue it "
                "(action_queue) and a worker runs it."
            )

    # -- actions -----------------------------------------------------------------------------
    def action_queue(self):
        """Put a draft job in its provider's queue; a worker picks it up at once."""
        self.ensure_one().check_access("write")
        JobStore(self.env).enqueue(self)
        return True

    def action_cancel(self):
        """Cancel a queued job, a failed one waiting for its automatic retry, or a running
        one (its stream is closed at once; the partial reply is kept, marked cancelled)."""
        self.ensure_one().check_access("write")
        JobStore(self.env).cancel(self)
        return True

    def action_retry(self):
        """Queue a failed job again (a new attempt), if it has retries left."""
        self.ensure_one().check_access("write")
        JobStore(self.env).retry(self)
        return True

    def action_start(self):
        """Start this queued job now (managers): claim it, commit, and run its attempt — on
        this process's worker runner when there is one, else here, returning when it is
        done. Raises when its queue is paused or full, or another worker took it."""
        self.ensure_one()._require_manager("start")
        from ..execution import run_attempt
        from ..runner import active_runner, worker_name

        lease = JobStore(self.env).start(self, worker_name())
        self.env.cr.commit()
        runner = active_runner(self.pool)
        if runner:
            runner.submit(lease)
        else:
            run_attempt(self.pool, lease)
        return True

    def action_complete(self, output_message_id=None):
        """Mark a running job completed by hand (managers; e.g. a result obtained
        elsewhere)."""
        self.ensure_one()._require_manager("complete")
        JobStore(self.env).complete_job(self, output_message_id)
        return True

    def action_fail(self, error_message=None):
        """Fail a queued or running job for good, with the reason (managers)."""
        self.ensure_one()._require_manager("fail")
        JobStore(self.env).fail_job(self, error_message or "Failed.")
        return True

    def _generation_request(self) -> tuple[list[dict], str | None, dict]:
        """What the job asks its provider for: the conversation, the model's name and the
        request options."""
        self.ensure_one()
        return self._generation_requests()[0]

    def _generation_requests(self) -> list[tuple[list[dict], str | None, dict]]:
        """``_generation_request`` of each job, in order, their conversations read in one
        query."""
        threads = self.env["llm.thread"].browse([job.thread_id.id for job in self])
        conversations = threads._conversations([job.input_message_id.id or None for job in self])
        requests = []
        for job, messages in zip(self, conversations, strict=True):
            inputs = job.generation_inputs or {}
            if not job.input_message_id and inputs.get("prompt"):
                # A job created with a prompt rather than a posted message (the contract's
                # "Create a job" example): the prompt is the user's turn.
                messages.append({"role": "user", "content": str(inputs["prompt"])})
            options = dict(inputs.get("options") or {})
            requests.append((messages, job.model_id.name or None, options))
        return requests

    def _queue_position(self) -> int:
        """1 + the queued jobs of the same provider that a worker will take before this one."""
        self.ensure_one()
        before = [
            "|",
            ("priority", ">", self.priority),
            "&",
            ("priority", "=", self.priority),
            "|",
            ("queued_at", "<", self.queued_at),
            "&",
            ("queued_at", "=", self.queued_at),
            ("id", "<", self.id),
        ]
        return 1 + self.sudo().search_count(
            [("provider_id", "=", self.provider_id.id), ("state", "=", "queued"), *before]
        )

    # -- status and maintenance --------------------------------------------------------------
    def check_status(self, wait: float = 0.5):
        """The job's status as its provider reports it (a dict, see llm_provider), applied to
        the job; False when the job is not running.

        It commits the current transaction first, so that it sees the worker's progress (and,
        on SQLite, does not hold the lock the worker needs), and waits up to ``wait`` seconds
        for progress of an active job, so a loop ``while job.state in ('queued', 'running'):
        job.check_status()`` neither spins nor stops seeing changes. A provider-side job's
        answer is applied once, however many check it at once."""
        self.ensure_one().check_access("read")
        notifier = notifier_for(self.pool)
        notifier.listen(*CHANNELS)
        notifier.watch_commits(PROGRESS)
        since = notifier.generation(PROGRESS, self.id)
        follow = self.state in ACTIVE_STATES and not (self.external_job_id or self.batch_id)
        self.env.cr.commit()  # nothing may be read until the wait ends: a read would start a
        if follow:  # transaction that (on SQLite) holds the lock the worker needs
            notifier.wait(PROGRESS, self.id, since, wait)
        if self.state != "running":
            return False
        if self.batch_id:
            return self._check_batch()
        if not self.external_job_id:
            return self.provider_id.sudo().check_generation_job_status(self)
        try:
            status = JobStore(self.env).check_external(self)
        except Exception as exc:
            self.env.cr.rollback()
            _logger.warning("Status check of generation job %s failed: %s", self.id, exc)
            return False
        self.env.cr.commit()
        return status if status is not None else False

    def _check_batch(self):
        """The status of a job in a provider batch: its batch polled (at most every few
        seconds, whoever asks), its results applied once it has ended."""
        from ..batches import STATUS_CHECK_SECONDS, poll

        batch_id = self.batch_id.id
        self.env.cr.commit()
        try:
            poll(self.pool, batch_id, unless_polled_within=STATUS_CHECK_SECONDS)
        except Exception as exc:
            _logger.warning("Status check of provider batch %s failed: %s", batch_id, exc)
        self.invalidate_recordset()
        status = {"state": self.state, "provider_data": self._provider_job()}
        if self.output_message_id:
            status["output_message_id"] = self.output_message_id.id
        if self.error_message:
            status["error_message"] = self.error_message
        return status

    def _provider_job(self) -> dict | None:
        """What the provider says of the job's batch (or background response): a manager's
        view of where the job is at the provider."""
        job = self.sudo()
        batch, response = job.batch_id, (job.provider_data or {}).get("response_id")
        if response:
            last = job.env["llm.generation.job.chunk"].search(
                [("job_id", "=", job.id), ("cursor", "!=", 0)], order="seq desc", limit=1
            )
            return {"kind": "response", "id": response, "cursor": last.cursor or None}
        if not batch:
            return None
        return {
            "kind": "batch",
            "id": batch.external_id or None,
            "state": batch.state,
            "provider_status": batch.provider_status or None,
            "request_counts": batch.request_counts or {},
            "submitted_at": batch.submitted_at or None,
            "last_polled_at": batch.last_polled_at or None,
            "ended_at": batch.ended_at or None,
            "error": batch.error_message or None,
        }

    @api.model
    def cleanup_old_jobs(self, days=7, batch_size=1000, log_hours=24):
        """Delete finished jobs created more than ``days`` days ago (then the provider batches
        that ended that long ago and hold none of the jobs left), and the stream logs of jobs
        finished more than ``log_hours`` hours ago (their replies stay, in their messages), in
        batches (each batch committed). Returns how many jobs were deleted.

        Each batch is locked, and what it counted in the counters of ``/metrics`` is added to
        their totals in the transaction that deletes it (llm_generation_metric): the counters
        never go back, and two cleanups at once do not fold the same jobs."""
        store, log_cutoff = JobStore(self.env), _now() - dt.timedelta(hours=log_hours)
        while store.forget_logs(log_cutoff, batch_size):
            self.env.cr.commit()
        cutoff = _now() - dt.timedelta(days=days)
        domain = [
            ("create_date", "<", cutoff),  # not a failed job with a retry to come
            "|",
            ("state", "in", ["completed", "cancelled"]),
            "&",
            ("state", "=", "failed"),
            ("next_retry_at", "=", False),
        ]
        deleted, totals = 0, self.env["llm.generation.metric.total"]
        while True:
            batch = self.search(domain, limit=batch_size, order="id")
            batch = batch.lock_for_update(domain=domain)  # still there, and ours alone
            if not batch:
                while store.forget_batches(cutoff, batch_size):
                    self.env.cr.commit()
                return deleted
            totals.fold(batch)
            batch.unlink()
            deleted += len(batch)
            self.env.cr.commit()


def _seconds(start: dt.datetime | bool, end: dt.datetime | bool) -> float:
    if not start or not end:
        return 0.0
    return max((end - start).total_seconds(), 0.0)
