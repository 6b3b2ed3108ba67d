"""The diagnosis and its fixes: what is stuck and why, failure rates, recurring errors,
problems; taking back what dead workers left (see the package docstring)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from core import AccessError

from ..store import BATCH, RETRY_PENDING, JobStore
from .common import (
    JOB,
    LIST_LIMIT,
    QUEUE,
    _active_counts,
    _ago,
    _clock,
    _failing,
    _jobs,
    _live_workers,
    _now,
    _orphan_reason,
    _provider_names,
    _queue_briefs,
    _visible_orphans,
    failure_groups,
    is_manager,
    job_summaries,
)

# Live workers requeue due retries every few seconds: one due longer ago than this is overdue.
RETRY_OVERDUE_SECONDS = 60.0
# The status cron (every 30 s in cron.yaml) polls provider-side jobs; silent this long: stale.
POLL_STALE_SECONDS = 300.0
STATUS_CRON = ("llm.generation.queue", "_check_job_statuses")


def diagnose(env, now: dt.datetime | None = None, errors_since_hours: float = 24) -> dict:
    """What is wrong, why, and what fixes it (see the package docstring)."""
    now = now or _now()
    su = env(su=True)
    queues = su[QUEUE].search([])
    active = _active_counts(su)
    workers = _live_workers(su, now)
    briefs = _queue_briefs(su, queues, active, workers, now)
    since = now - dt.timedelta(hours=errors_since_hours)
    stuck, problems = _stuck(env, briefs, now)
    problems = [*_worker_problems(workers), *_queue_problems(briefs), *problems]
    return {
        "generated_at": now,
        "workers_alive": len(workers),
        "workers": workers,
        "queues": [
            {
                key: brief[key]
                for key in (
                    "id",
                    "name",
                    "provider_name",
                    "enabled",
                    "health",
                    "backlog",
                    "running",
                    "limit",
                    "oldest_queued_age_seconds",
                    "live_workers",
                )
            }
            for brief in briefs
        ],
        "stuck": stuck,
        "failure_rates": failure_rates(su, since, now),
        "recurring_errors": failure_groups(env, since, now),
        "problems": problems,
    }


def _worker_problems(workers: list[dict]) -> list[str]:
    if workers:
        return []
    return [
        "No worker is live: queued jobs, automatic retries and the crons wait until one "
        "starts (`llmjobs worker`)."
    ]


def _queue_problems(briefs: list[dict]) -> list[str]:
    """A sentence per critical queue, saying why."""
    problems = []
    for brief in briefs:
        if brief["health"] != "critical":
            continue
        name, limit = brief["name"], brief["limit"]
        if brief["running"] >= limit and brief["backlog"] > 2 * limit:
            problems.append(
                f"Queue '{name}' is saturated: {brief['running']} of {limit} running and "
                f"{brief['backlog']} waiting, more than twice its limit (raise "
                "max_concurrent_jobs, or add workers if theirs are full)."
            )
        if brief["cooldown"] == "open":
            problems.append(f"Queue '{name}' is cooled down: {brief['waiting_reason']}")
        if _failing(brief):
            finished = brief["finished_hour"]
            problems.append(
                f"Queue '{name}' is failing: {finished['failed']} of the "
                f"{finished['completed'] + finished['failed']} jobs finished in the last hour "
                "failed (`llmjobs diagnostics --show-errors` groups their errors)."
            )
    for brief in briefs:
        if brief["health"] != "critical" and brief["waiting_reason"] and brief["backlog"]:
            problems.append(
                f"{_jobs(brief['backlog'])} waiting in '{brief['name']}': {brief['waiting_reason']}"
            )
    return problems


def failure_rates(su, since: dt.datetime, now: dt.datetime) -> list[dict]:
    """Completed and failed jobs finished since ``since`` per provider and model, the highest
    failure rate (a percentage) first."""
    groups = su[JOB].read_group(
        [
            ("state", "in", ["completed", "failed"]),
            ("completed_at", ">=", since),
            ("completed_at", "<=", now),
        ],
        ["provider_id", "model_id", "state"],
    )
    counts: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for group in groups:
        counts[(group["provider_id"], group["model_id"] or 0)][group["state"]] += group["__count"]
    providers = _provider_names(su, [provider_id for provider_id, _model in counts])
    models = su["llm.model"].browse(sorted({model for _provider, model in counts if model}))
    model_names = {row["id"]: row["name"] for row in models.read(["name"])}
    rates = []
    for (provider_id, model_id), by_state in counts.items():
        finished = by_state["completed"] + by_state["failed"]
        rates.append(
            {
                "provider_name": providers.get(provider_id, ""),
                "model_name": model_names.get(model_id),
                "finished": finished,
                "failed": by_state["failed"],
                "rate": 100.0 * by_state["failed"] / finished,
            }
        )
    return sorted(rates, key=lambda r: (-r["rate"], -r["finished"], r["provider_name"]))


Found = tuple[list[dict], list[str]]  # stuck jobs (each kind up to LIST_LIMIT), problems


def _stuck(env, briefs: list[dict], now: dt.datetime) -> Found:
    """The stuck jobs the caller may see, and a sentence per kind (and queue) saying how many
    there are."""
    deadlines = {brief["provider_id"]: brief["attempt_deadline_seconds"] for brief in briefs}
    stuck: list[dict] = []
    problems: list[str] = []
    for found, sentences in (
        _orphaned(env, now),
        *(_waiting(env, brief, now) for brief in briefs),
        _overdue_retries(env, now),
        _unpolled_external(env, deadlines, now),
        _unpolled_batches(env, now),
        _over_budget(env, now),
    ):
        stuck += found
        problems += sentences
    return stuck, problems


def _orphaned(env, now: dt.datetime) -> Found:
    """Running jobs that no live worker holds."""
    orphans = _visible_orphans(env, JobStore(env).orphans(now), now)
    if not orphans:
        return [], []
    jobs = env[JOB].browse([orphan.job_id for orphan, _summary in orphans[:LIST_LIMIT]])
    rows = {row["id"]: row for row in jobs.read(["retry_count", "max_retries", "cancel_requested"])}
    stuck = []
    for orphan, summary in orphans[:LIST_LIMIT]:
        job = rows[orphan.job_id]
        if job["cancel_requested"]:
            fix = "cancel"
        else:
            fix = "requeue" if job["retry_count"] < job["max_retries"] else "fail"
        kind = "lease_expired" if orphan.expired else "worker_gone"
        stuck.append({**summary, "kind": kind, "reason": _orphan_reason(orphan), "fix": fix})
    them = "it" if len(orphans) == 1 else "them"
    problem = (
        f"{_jobs(len(orphans))} running without a live worker (theirs died or froze): "
        f"`llmjobs diagnostics --fix-stuck` requeues {them}."
    )
    return stuck, [problem]


def _waiting(env, brief: dict, now: dt.datetime) -> Found:
    """Queued jobs that nothing will start: their queue is paused, or no live worker serves
    it."""
    name = brief["name"]
    if not brief["backlog"]:
        return [], []
    if not brief["enabled"]:
        kind, why = (
            "queue_paused",
            (
                f"Queued in '{name}', which is paused: nothing starts until a manager resumes it "
                f"(POST /api/queues/{brief['id']}/resume)."
            ),
        )
        problem = f"{_jobs(brief['backlog'])} waiting in '{name}', which is paused."
    elif not brief["live_workers"]:
        kind, why = (
            "no_worker",
            (
                f"Queued in '{name}', which no live worker serves: start one (`llmjobs worker`; "
                f"LLMJOBS_WORKER_QUEUES, when set, must name '{brief['provider_name']}')."
            ),
        )
        problem = f"{_jobs(brief['backlog'])} waiting in '{name}', which no live worker serves."
    else:
        return [], []
    waiting = env[JOB].search(
        [("provider_id", "=", brief["provider_id"]), ("state", "=", "queued")],
        order="queued_at, id",
        limit=LIST_LIMIT,
    )
    stuck = [
        {**summary, "kind": kind, "reason": why, "fix": None}
        for summary in job_summaries(waiting, now)
    ]
    return stuck, [problem] if stuck else []


def _overdue_retries(env, now: dt.datetime) -> Found:
    """Failed jobs whose automatic retry is overdue: live workers requeue due retries within
    seconds, so none is running."""
    domain = [
        *RETRY_PENDING,
        ("next_retry_at", "<", now - dt.timedelta(seconds=RETRY_OVERDUE_SECONDS)),
    ]
    overdue = env[JOB].search(domain, order="next_retry_at, id", limit=LIST_LIMIT)
    if not overdue:
        return [], []
    due = {row["id"]: row["next_retry_at"] for row in overdue.read(["next_retry_at"])}
    stuck = []
    for summary in job_summaries(overdue, now):
        when = due[summary["id"]]
        reason = (
            f"Waiting for its automatic retry, due at {_clock(when)} "
            f"({_ago((now - when).total_seconds())} ago): live workers requeue due retries "
            "within seconds, so none is running; `llmjobs diagnostics --fix-stuck` requeues "
            "it now."
        )
        stuck.append({**summary, "kind": "retry_overdue", "reason": reason, "fix": "retry"})
    problem = (
        f"{_jobs(env[JOB].search_count(domain))} waiting for an automatic retry that is "
        "overdue (no worker requeues due retries)."
    )
    return stuck, [problem]


def _unpolled_external(env, deadlines: dict[int, float], now: dt.datetime) -> Found:
    """Provider-side jobs the status cron has not polled for a long time: it runs in workers
    (every 30 s, in cron.yaml), and fails those past their queue's attempt deadline."""
    cron = env(su=True)["ir.cron"].search(
        [
            ("model_name", "=", STATUS_CRON[0]),
            ("method", "=", STATUS_CRON[1]),
            ("active", "=", True),
        ],
        order="last_success_at desc",
        limit=1,
    )
    polled = (cron.last_success_at or None) if cron else None
    stale_since = now - dt.timedelta(seconds=POLL_STALE_SECONDS)
    if polled and polled >= stale_since:
        return [], []
    jobs = env[JOB].search(
        [
            ("state", "=", "running"),
            ("external_job_id", "!=", False),
            ("started_at", "<", stale_since),
        ],
        order="started_at, id",
        limit=LIST_LIMIT,
    )
    if not jobs:
        return [], []
    providers = {row["id"]: row["provider_id"] for row in jobs.read(["provider_id"])}
    since = f"since {_clock(polled)}" if polled else "ever"
    stuck = []
    for summary in job_summaries(jobs, now):
        deadline = deadlines.get(providers[summary["id"]]) or 3600.0
        late = (summary["running_seconds"] or 0.0) > deadline
        what = (
            f"past its queue's attempt deadline ({deadline:g} s) with no result"
            if late
            else f"for {_ago(summary['running_seconds'] or 0.0)}"
        )
        reason = (
            f"Running at its provider {what}, and not polled {since}: the status cron "
            f"({STATUS_CRON[0]}.{STATUS_CRON[1]}) runs in workers, and none has run it. "
            + (
                "`llmjobs diagnostics --fix-stuck` fails it (retried if retries are left)."
                if late
                else "Start a worker (`llmjobs worker`) with the crons of cron.yaml."
            )
        )
        stuck.append(
            {
                **summary,
                "kind": "external_unpolled",
                "reason": reason,
                "fix": "fail" if late else None,
            }
        )
    problem = (
        f"{_jobs(len(stuck))} running at their provider, not polled {since} (the status cron "
        "is not running)."
    )
    return stuck, [problem]


def _unpolled_batches(env, now: dt.datetime) -> Found:
    """Jobs in provider batches that nobody polls (no worker runs the status cron), whose
    polls fail, or whose submission was never recorded."""
    stale_since = now - dt.timedelta(seconds=POLL_STALE_SECONDS)
    batches = env(su=True)[BATCH].search(
        [
            "|",
            "&",
            ("state", "=", "running"),
            "|",
            ("last_polled_at", "<", stale_since),
            ("error_message", "!=", False),
            "&",
            ("state", "=", "submitting"),
            ("create_date", "<", stale_since),
        ],
        order="id",
    )
    stuck, problems = [], []
    for batch in batches:
        jobs = env[JOB].search(
            [("batch_id", "=", batch.id), ("state", "=", "running")],
            order="id",
            limit=LIST_LIMIT - len(stuck),
        )
        if not jobs:
            continue
        name = f"provider batch {batch.external_id or batch.id}"
        if batch.state == "submitting":
            kind, why = (
                "batch_unsubmitted",
                (
                    "its submission was never recorded; the status cron takes it over (finds it at "
                    "the provider, or queues its jobs again) once its claim expires."
                ),
            )
        elif batch.error_message:
            kind, why = "batch_poll_failing", f"{_sentence_start(batch.error_message)}"
        else:
            kind, why = (
                "batch_unpolled",
                (
                    f"not polled since {_clock(batch.last_polled_at)}: the status cron "
                    f"({STATUS_CRON[0]}.{STATUS_CRON[1]}) runs in workers, and none has run it; "
                    "start a worker (`llmjobs worker`) with the crons of cron.yaml."
                ),
            )
        stuck += [
            {**summary, "kind": kind, "reason": f"In {name}: {why}", "fix": None}
            for summary in job_summaries(jobs, now)
        ]
        count = env[JOB].search_count([("batch_id", "=", batch.id), ("state", "=", "running")])
        problems.append(f"{_jobs(count)} in {name} of '{batch.provider_id.name}': {why}")
        if len(stuck) >= LIST_LIMIT:
            break
    return stuck, problems


def _over_budget(env, now: dt.datetime) -> Found:
    """Queued jobs waiting because a budget has too little left."""
    waiting = env[JOB].search(
        [("state", "=", "queued"), ("waiting_reason", "!=", False)],
        order="queued_at, id",
        limit=LIST_LIMIT,
    )
    if not waiting:
        return [], []
    reasons = {row["id"]: row["waiting_reason"] for row in waiting.read(["waiting_reason"])}
    stuck = [
        {**summary, "kind": "budget", "reason": reasons[summary["id"]], "fix": None}
        for summary in job_summaries(waiting, now)
    ]
    problem = (
        f"{_jobs(len(stuck))} waiting for a budget to reset (or be raised): "
        f"{reasons[stuck[0]['id']]}"
    )
    return stuck, [problem]


def _sentence_start(text: str) -> str:
    return text[:1].lower() + text[1:]


def fix_stuck(env, now: dt.datetime | None = None) -> list[str]:
    """Take back what dead workers left (requeued, or failed when out of retries, or cancelled
    when that was asked), requeue the automatic retries that are due, and fail (retryably)
    the provider-side jobs past their queue's attempt deadline: through the job store,
    in ``env``'s transaction (the caller commits). LLM managers only. Returns a sentence per
    job."""
    if not is_manager(env):
        raise AccessError("Only LLM managers may fix stuck jobs.")
    now = now or _now()
    store, jobs = JobStore(env), env(su=True)[JOB]
    done = []
    for orphan, state in store.take_back_orphans():
        worker = orphan.worker or "unknown"
        why = (
            f"its lease expired: its worker {worker} died or froze"
            if orphan.expired
            else f"its worker {worker} is not live"
        )
        verb = {"queued": "Requeued", "failed": "Failed", "cancelled": "Cancelled"}[state]
        tail = {"failed": "; it had no retries left", "cancelled": "; its cancellation was asked"}
        done.append(f"{verb} job {orphan.job_id} ({why}{tail.get(state, '')}).")

    due = jobs.search([*RETRY_PENDING, ("next_retry_at", "<=", now)], order="next_retry_at, id")
    if due:
        store.retry_due()
        due.invalidate_recordset()
        for job in due:
            if job.state == "queued":
                done.append(f"Requeued job {job.id} for its automatic retry, which was due.")
            elif not job.next_retry_at:
                done.append(
                    f"Dropped the automatic retry of job {job.id}: its queue no longer retries "
                    "automatically."
                )

    queues = jobs.env[QUEUE].search([])
    deadlines = {q.provider_id.id: q.attempt_deadline_seconds or 3600.0 for q in queues}
    for job in jobs.search([("state", "=", "running"), ("external_job_id", "!=", False)]):
        timeout = dt.timedelta(seconds=deadlines.get(job.provider_id.id, 3600.0))
        if store.fail_stalled_external(job, timeout):
            done.append(f"Failed job {job.id}: {job.error_message}")
    return done
