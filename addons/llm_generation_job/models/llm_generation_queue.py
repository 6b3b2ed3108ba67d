"""Per-provider queues: configuration, live counts, health, statistics, and the entry points
the crons and managers use to process, pause, clear and retry.

Health, from the most to the least serious:

- ``disabled``: the queue is paused (not enabled);
- ``critical``: saturated (running >= max_concurrent_jobs) with a backlog above twice the
  limit, or more than half of the jobs finished in the last hour failed (at least 5 finished),
  or its provider is cooled down (its circuit breaker is open);
- ``warning``: saturated;
- ``healthy``: otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging

from addons.llm_thread import wire
from core import UserError, ValidationError, api, fields, models
from core.notify import notifier_for

from ..signals import QUEUED
from ..store import JobStore

_logger = logging.getLogger(__name__)

HEALTH = [
    ("healthy", "Healthy"),
    ("warning", "Warning"),
    ("critical", "Critical"),
    ("disabled", "Disabled"),
]
FAILURE_RATE_CRITICAL = 0.5
FAILURE_RATE_MIN_JOBS = 5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GenerationQueue(models.Model):
    _name = "llm.generation.queue"
    _description = "LLM generation queue"
    _order = "id"
    _sql_constraints = [
        ("provider_unique", "unique(provider_id)", "A queue already exists for this provider."),
    ]

    name = fields.Char(compute="_compute_name", store=True, precompute=True)
    provider_id = fields.Many2one("llm.provider", required=True, ondelete="cascade")
    enabled = fields.Boolean(default=True, help="Paused queues start no jobs")
    max_concurrent_jobs = fields.Integer(default=5)
    auto_retry_failed = fields.Boolean(default=True)
    retry_delay_minutes = fields.Integer(default=5, help="Base of the exponential backoff")
    attempt_deadline_seconds = fields.Float(
        default=3600,
        help="An attempt running longer than this fails (retryable): a reply still streaming "
        "or a provider-side job with no result. The provider's timeout bounds each read.",
    )
    execution_mode = fields.Selection(
        [("stream", "Streamed by a worker"), ("background", "Background responses (OpenAI)")],
        default="stream",
        required=True,
        help="How its jobs' replies are generated, unless a job asks otherwise",
    )
    batch_unattended = fields.Boolean(
        help="Jobs that nobody follows (created with interactive=False) go in provider batches: "
        "half the price, results within the provider's window (up to 24 hours)"
    )
    batch_max_size = fields.Integer(
        default=1000, help="Requests per batch, at most (within the provider's limit)"
    )
    batch_max_wait_seconds = fields.Float(
        default=60,
        help="A batch goes once it is full or its oldest job has waited this long",
    )
    batch_requeue_unfinished = fields.Boolean(
        help="A job whose request the provider never ran (its batch expired or was cancelled) "
        "is queued again as a streamed job, rather than failed to be retried in a batch"
    )
    # Limits shared by every worker (admission.py), and the state they keep.
    rpm_limit = fields.Integer(help="Requests a minute to the provider, for all workers")
    tpm_limit = fields.Integer(help="Tokens a minute (prompt and reply, estimated at start)")
    throttled_until = fields.Datetime(
        help="The provider asked every worker to wait until then (429 Retry-After, or its "
        "remaining-requests headers at 0)"
    )
    breaker_threshold = fields.Integer(
        default=5, help="Retryable failures in a row that cool the provider down (0: never)"
    )
    breaker_cooldown_seconds = fields.Float(default=30, help="How long a cooldown lasts")
    breaker_state = fields.Selection(
        [("closed", "Closed"), ("open", "Open (cooled down)"), ("half_open", "Half-open (probe)")],
        default="closed",
        required=True,
    )
    breaker_reason = fields.Text(help="The failure that opened the breaker")
    breaker_since = fields.Datetime()
    breaker_until = fields.Datetime(help="Open: when a probe may go; half-open: probe deadline")
    consecutive_failures = fields.Integer()
    fair_share = fields.Selection(
        [("none", "First come, first served"), ("user", "Fair share between users")],
        default="none",
        required=True,
        help="User: on a busy queue, the user served the fewest tokens lately goes next",
    )
    adaptive_concurrency = fields.Boolean(
        help="Follow the provider: raise the concurrency slowly while requests succeed, halve "
        "it at once on a 429 (between min_concurrency and max_concurrent_jobs)"
    )
    min_concurrency = fields.Integer(default=1)
    current_concurrency = fields.Integer(help="The adaptive concurrency now")
    adaptive_successes = fields.Integer()
    waiting_reason = fields.Char(help="Why its queued jobs are not started now")
    eligible_at = fields.Datetime(help="When they may start again")
    last_processed_at = fields.Datetime(help="When a worker last started its jobs (to a second)")
    queued_jobs_count = fields.Integer(compute="_compute_counts")
    current_running_jobs = fields.Integer(
        compute="_compute_counts", help="Jobs running in workers (not those in provider batches)"
    )
    batch_jobs_count = fields.Integer(
        compute="_compute_counts", help="Jobs running in provider batches"
    )
    failed_jobs_count = fields.Integer(compute="_compute_counts")
    health = fields.Selection(HEALTH, compute="_compute_health", search="_search_health")

    @api.depends("provider_id.name")
    def _compute_name(self):
        for queue in self:
            queue.name = f"{queue.provider_id.name} queue"

    def _compute_counts(self):
        counts = self._state_counts()
        groups = (
            self.env["llm.generation.job"]
            .sudo()
            .read_group(
                [
                    ("provider_id", "in", self.mapped("provider_id").ids),
                    ("state", "=", "running"),
                    ("batch_id", "!=", False),
                ],
                ["provider_id"],
                ["__count"],
            )
        )
        in_batches = {group["provider_id"]: group["__count"] for group in groups}
        for queue in self:
            by_state = counts.get(queue.provider_id.id, {})
            batched = in_batches.get(queue.provider_id.id, 0)
            queue.queued_jobs_count = by_state.get("queued", 0)
            queue.current_running_jobs = by_state.get("running", 0) - batched
            queue.batch_jobs_count = batched
            queue.failed_jobs_count = by_state.get("failed", 0)

    def _state_counts(self) -> dict[int, dict[str, int]]:
        groups = (
            self.env["llm.generation.job"]
            .sudo()
            .read_group(
                [("provider_id", "in", self.mapped("provider_id").ids)],
                ["provider_id", "state"],
                ["__count"],
            )
        )
        counts: dict[int, dict[str, int]] = {}
        for group in groups:
            counts.setdefault(group["provider_id"], {})[group["state"]] = group["__count"]
        return counts

    def _compute_health(self):
        failure_rates = self._recent_failure_rates()
        for queue in self:
            saturated = queue.current_running_jobs >= queue.max_concurrent_jobs
            if not queue.enabled:
                queue.health = "disabled"
            elif (
                (saturated and queue.queued_jobs_count > 2 * queue.max_concurrent_jobs)
                or failure_rates.get(queue.provider_id.id, 0.0) > FAILURE_RATE_CRITICAL
                or queue.breaker_state == "open"
            ):
                queue.health = "critical"
            elif saturated:
                queue.health = "warning"
            else:
                queue.health = "healthy"

    def _recent_failure_rates(self) -> dict[int, float]:
        since = _now() - dt.timedelta(hours=1)
        groups = (
            self.env["llm.generation.job"]
            .sudo()
            .read_group(
                [
                    ("provider_id", "in", self.mapped("provider_id").ids),
                    ("state", "in", ["completed", "failed"]),
                    ("completed_at", ">=", since),
                ],
                ["provider_id", "state"],
                ["__count"],
            )
        )
        totals: dict[int, dict[str, int]] = {}
        for group in groups:
            totals.setdefault(group["provider_id"], {})[group["state"]] = group["__count"]
        rates = {}
        for provider_id, by_state in totals.items():
            finished = sum(by_state.values())
            if finished >= FAILURE_RATE_MIN_JOBS:
                rates[provider_id] = by_state.get("failed", 0) / finished
        return rates

    def _search_health(self, operator, value):
        if operator not in ("=", "!=", "in", "not in"):
            raise UserError("Search queue health with =, !=, in or not in.")
        wanted = {value} if isinstance(value, str) else set(value)
        queues = self.search([])
        matching = [q.id for q in queues if (q.health in wanted) == (operator in ("=", "in"))]
        return [("id", "in", matching)]

    @api.constrains(
        "execution_mode", "batch_unattended", "batch_max_size", "batch_max_wait_seconds"
    )
    def _check_execution(self):
        for queue in self:
            provider = queue.provider_id.sudo()
            refusal = provider._execution_mode_refusal(queue.execution_mode)
            if not refusal and queue.batch_unattended:
                refusal = provider._execution_mode_refusal("batch")
            if refusal:
                raise ValidationError(f"Queue '{queue.name}': {refusal}")
            limit = wire.BATCH_PROTOCOLS.get(provider.service)
            most = limit.MAX_REQUESTS if limit else None
            if queue.batch_max_size < 1 or (most and queue.batch_max_size > most):
                raise ValidationError(
                    f"Queue '{queue.name}': batch_max_size is {queue.batch_max_size}; a batch "
                    f"holds 1 to {most or 'the provider allows'} requests."
                )
            if queue.batch_max_wait_seconds < 0:
                raise ValidationError(
                    f"Queue '{queue.name}': batch_max_wait_seconds cannot be negative."
                )

    def _concurrency(self) -> int:
        """How many of its jobs may run at once now: ``max_concurrent_jobs``, or on an
        adaptive queue its current concurrency within the manager's bounds."""
        self.ensure_one()
        if not self.adaptive_concurrency:
            return self.max_concurrent_jobs
        lowest = max(self.min_concurrency, 1)
        return max(lowest, min(self.current_concurrency or lowest, self.max_concurrent_jobs))

    # -- creation ----------------------------------------------------------------------------
    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            provider_id = vals.get("provider_id")
            if provider_id and self.sudo().search_count([("provider_id", "=", provider_id)]):
                name = self.env["llm.provider"].sudo().browse(provider_id).name
                raise UserError(
                    f"A queue already exists for provider '{name}'; configure that one instead."
                )
        return super().create(vals_list)

    @api.model
    def _get_or_create_queue(self, provider_id):
        """The provider's queue (created enabled, with defaults, on first use)."""
        provider_id = getattr(provider_id, "id", provider_id)
        return self._find_queue(provider_id) or self.sudo().create({"provider_id": provider_id})

    @api.model
    def _find_queue(self, provider_id: int, lock: bool = False):
        """The provider's queue if it has one, its fields read (and with ``lock`` its row
        locked) by the statement that finds it."""
        domain = [("provider_id", "=", provider_id)]
        return self.sudo().search_fetch(domain, order="id", limit=1, lock=lock)

    # -- processing --------------------------------------------------------------------------
    @api.model
    def _process_provider_queue(self, provider):
        """Start as many queued jobs of ``provider`` as its queue allows; returns how many.

        In a worker process the jobs are handed to its runner; elsewhere (a script, ``llmjobs
        cron run``) they run here, one after another, before this returns. Commits the
        current transaction (the claims must be visible to other workers)."""
        from ..execution import run_attempt
        from ..runner import active_runner, worker_name

        provider_id = getattr(provider, "id", provider)
        self._get_or_create_queue(provider_id)
        runner = active_runner(self.pool)
        limit = runner.free_slots() if runner else None
        if limit == 0:
            return 0
        leases = JobStore(self.env).claim(provider_id, worker_name(), limit=limit)
        self.env.cr.commit()
        for lease in leases:
            if runner:
                runner.submit(lease)
            else:
                run_attempt(self.pool, lease)
        return len(leases)

    @api.model
    def _process_all_queues(self):
        """Cron: process every enabled queue. Returns the number of jobs started."""
        started = 0
        for queue in self.sudo().search([("enabled", "=", True)]):
            try:
                started += self._process_provider_queue(queue.provider_id.id)
            except Exception:
                _logger.exception(
                    "Processing the queue of provider %s failed", queue.provider_id.id
                )
                self.env.cr.rollback()
        return started

    @api.model
    def _check_job_statuses(self):
        """Cron: take back jobs of dead workers, submit and poll provider batches (one poll
        per batch), fail jobs stuck at an external provider, and ask providers about their
        asynchronous jobs. Returns how many jobs were taken back."""
        from ..batches import tend

        recovered = JobStore(self.env).requeue_expired()
        self.env.cr.commit()
        tend(self.pool)
        jobs = self.env["llm.generation.job"].sudo()
        for job in jobs.search([("state", "=", "running"), ("external_job_id", "!=", False)]):
            queue = self._get_or_create_queue(job.provider_id.id)
            timeout = dt.timedelta(seconds=queue.attempt_deadline_seconds or 3600)
            try:
                store = JobStore(self.env)
                if not store.fail_stalled_external(job, timeout):
                    store.check_external(job)
                self.env.cr.commit()
            except Exception:
                self.env.cr.rollback()
                _logger.exception("Status check of generation job %s failed", job.id)
        return recovered

    @api.model
    def _auto_retry_failed_jobs(self):
        """Cron: requeue failed jobs whose automatic retry is due. Returns how many."""
        return JobStore(self.env).retry_due()

    # -- manager actions ---------------------------------------------------------------------
    def action_enable(self):
        self.write({"enabled": True})
        for queue in self:
            notifier_for(self.pool).send(self.env.cr, QUEUED, queue.provider_id.id)
        return True

    def action_disable(self):
        self.write({"enabled": False})
        return True

    def action_process_queue(self):
        self.check_access("write")
        return sum(self._process_provider_queue(queue.provider_id.id) for queue in self)

    def action_clear_queue(self):
        """Cancel every queued job of these queues; returns how many."""
        self.check_access("write")
        store = JobStore(self.env)
        jobs = store.jobs.search(
            [("provider_id", "in", self.mapped("provider_id").ids), ("state", "=", "queued")]
        )
        for job in jobs:
            store.cancel(job, reason="Queue cleared by a manager.")
        return len(jobs)

    def action_retry_failed_jobs(self):
        """Retry every failed job of these queues that has retries left; returns how many."""
        self.check_access("write")
        store = JobStore(self.env)
        jobs = store.jobs.search(
            [("provider_id", "in", self.mapped("provider_id").ids), ("state", "=", "failed")]
        )
        retryable = jobs.filtered("can_retry")
        for job in retryable:
            store.retry(job)
        return len(retryable)

    # -- statistics --------------------------------------------------------------------------
    def get_queue_stats(self, window_hours: float = 24):
        """Counts and performance over the last ``window_hours`` hours, as a dict."""
        self.ensure_one()
        jobs = self.env["llm.generation.job"].sudo()
        since = _now() - dt.timedelta(hours=window_hours)
        provider = [("provider_id", "=", self.provider_id.id)]
        counts = dict.fromkeys(
            ("draft", "queued", "running", "completed", "failed", "cancelled"), 0
        )
        counts.update(self._state_counts().get(self.provider_id.id, {}))
        finished = jobs.read_group(
            [*provider, ("state", "in", ["completed", "failed"]), ("completed_at", ">=", since)],
            ["state"],
            ["__count", "queue_duration:avg", "duration:avg"],
        )
        by_state = {g["state"]: g for g in finished}
        done = by_state.get("completed", {}).get("__count", 0)
        failed = by_state.get("failed", {}).get("__count", 0)
        oldest = jobs.search([*provider, ("state", "=", "queued")], order="queued_at", limit=1)
        [spent] = self.env["llm.generation.usage"].sudo().read_group(
            [*provider, ("ended_at", ">=", since)],
            [],
            ["prompt_tokens:sum", "completion_tokens:sum", "cost:sum"],
        ) or [{}]
        return {
            "queue_id": self.id,
            "provider_name": self.provider_id.name,
            "enabled": self.enabled,
            "max_concurrent_jobs": self.max_concurrent_jobs,
            "queue_health": self.health,
            "job_counts": counts,
            "performance": {
                "avg_queue_time": _average(finished, "queue_duration:avg"),
                "avg_processing_time": _average(finished, "duration:avg"),
                "success_rate": 100.0 * done / (done + failed) if done + failed else 0.0,
                "throughput_per_hour": done / window_hours,
                "oldest_queued_age": (
                    (_now() - oldest.queued_at).total_seconds() if oldest else 0.0
                ),
                "total_jobs_window": jobs.search_count([*provider, ("create_date", ">=", since)]),
                "window_hours": window_hours,
            },
            "last_processed_at": self.last_processed_at or None,
            "usage": {
                "prompt_tokens": spent.get("prompt_tokens:sum") or 0,
                "completion_tokens": spent.get("completion_tokens:sum") or 0,
                "cost": spent.get("cost:sum") or 0.0,
            },
        }


def _average(groups: list[dict], key: str) -> float:
    """Weighted mean of per-state averages."""
    total = sum(g["__count"] for g in groups)
    if not total:
        return 0.0
    return sum((g[key] or 0.0) * g["__count"] for g in groups) / total
