"""What operators watch and fix: an overview of jobs, queues and workers, a diagnosis of what
is stuck and why, and taking back what dead workers left.

- ``overview(env)``: counts per state; per queue its health, backlog, saturation, oldest queued
  job, throughput and success rate over the last hour (5-minute buckets) and day (hours), time
  to first token and tokens per second; the last hour's LLM figures (tokens, time to first
  token, tokens per second, finish reasons); the last day's failures grouped by error;
  long-running and stalled jobs; live workers.
- ``diagnose(env)``: what ``llmjobs diagnostics`` prints: the queues' backlog, the stuck jobs
  with why each is stuck and what fixes it, failure rates per provider and model, recurring
  errors, and ``problems``: sentences, none when all is well.
- ``fix_stuck(env)``: takes back the jobs of dead workers, requeues overdue retries and fails
  provider-side jobs past their deadline, through the job store (``store.py``), the only
  writer of a job's state; says what it did, a sentence per job.

Aggregates are counted as the superuser (every user's jobs count, none is shown); the job lists
(long-running, stalled, stuck, a failure group's example) are searched as the caller, so an
ordinary user sees only their own jobs and a manager sees all. Every figure is a bounded query
on indexed columns: grouped counts over a window, lists with a limit, and the last hour's
completed attempts up to ``SAMPLE_LIMIT`` (the most recent), so the overview stays fast however
many finished jobs the database keeps. Datetimes are aware, in UTC; ``now`` (tests) moves the
windows' end, while leases and workers' liveness are judged at the real time.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import statistics
from collections import defaultdict

from core import AccessError

from .models.llm_generation_job import MANAGER_GROUP
from .models.llm_generation_queue import FAILURE_RATE_CRITICAL, FAILURE_RATE_MIN_JOBS
from .store import FINISHED_STATES, RETRY_PENDING, JobStore, Orphan

JOB, ATTEMPT, QUEUE = "llm.generation.job", "llm.generation.job.attempt", "llm.generation.queue"
WORKER, MESSAGE = "llm.generation.worker", "llm.message"
LONG_RUNNING_SECONDS = 300.0  # or half the queue's attempt deadline, when that is shorter
LIST_LIMIT = 50  # jobs per list (long-running, stalled, each kind of stuck job)
FAILURE_GROUPS = 10
SAMPLE_LIMIT = 5000  # the last hour's completed attempts read for percentiles and tokens
# Live workers requeue due retries every few seconds: one due longer ago than this is overdue.
RETRY_OVERDUE_SECONDS = 60.0
# The status cron (every 30 s in cron.yaml) polls provider-side jobs; silent this long: stale.
POLL_STALE_SECONDS = 300.0
STATUS_CRON = ("llm.generation.queue", "_check_job_statuses")
HOUR_BUCKET, HOUR_BUCKETS = dt.timedelta(minutes=5), 12
DAY_BUCKET, DAY_BUCKETS = dt.timedelta(hours=1), 24
STATE_COUNTS = ("queued", "running", "retry_waiting", *FINISHED_STATES)
# The store's sentences about what happens next: a failure's cause is what comes before.
_NEXT_STEP = re.compile(r"\s+(?:Retrying at |Gave up after |Not retried: ).*$", re.S)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ID = re.compile(
    r"(?<![0-9a-z])(?:(?=[0-9a-f]*\d)[0-9a-f]{8,}|(?=[0-9a-z]*\d)[0-9a-z]{16,})(?![0-9a-z])", re.I
)
_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}:\d{2}:\d{2}\b"
)
_NUMBER = re.compile(r"(?<!HTTP )(?<!status )\b\d+(?:\.\d+)?\b")
ERROR_LENGTH = 300


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@functools.lru_cache(maxsize=4096)  # the same errors come back at every refresh
def normalize_error(text: str | None) -> str:
    """``text`` with what differs between alike errors replaced (times, ids, numbers but HTTP
    statuses) and the store's "Retrying at ..." / "Gave up after ..." dropped, so that alike
    errors group together."""
    text = _NEXT_STEP.sub("", (text or "").strip()) or "(no message)"
    text = _UUID.sub("<id>", text)
    text = _TIME.sub("<time>", text)
    text = _ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    text = " ".join(text.split())
    return text if len(text) <= ERROR_LENGTH else f"{text[: ERROR_LENGTH - 3]}..."


def is_manager(env) -> bool:
    return env.su or env.user.has_group(MANAGER_GROUP)


# -- overview --------------------------------------------------------------------------------
def overview(env, now: dt.datetime | None = None) -> dict:
    """The dashboard's figures (see the module docstring); ``env``: any user."""
    now = now or _now()
    su = env(su=True)
    queues = su[QUEUE].search([])
    active = _active_counts(su)
    workers = _live_workers(su, now)
    throughput, finished = _throughput(su, now)
    sample = _hour_sample(su, now)
    cards = []
    for brief in _queue_briefs(su, queues, active, workers, now):
        provider_id = brief["provider_id"]
        hour, day = throughput[provider_id]["hour"], throughput[provider_id]["day"]
        figures = sample["by_provider"].get(provider_id, {})
        cards.append(
            {
                **brief,
                "hour": _window(hour),
                "day": _window(day),
                "ttft_p50_ms": _median(figures.get("ttft_ms")),
                "tokens_per_second": _median(figures.get("tokens_per_second")),
            }
        )
    return {
        "generated_at": now,
        "state_counts": _state_counts(su, active, finished),
        "queues": cards,
        "llm": sample["llm"],
        "failure_groups": failure_groups(env, now - dt.timedelta(hours=24), now),
        "long_running": long_running(env, queues, now),
        "stalled": stalled(env, now),
        "workers": workers,
    }


def _active_counts(su) -> dict[int, dict[str, int]]:
    """Queued and running jobs per provider."""
    groups = su[JOB].read_group(
        [("state", "in", ["queued", "running"])], ["provider_id", "state"], ["__count"]
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for group in groups:
        counts[group["provider_id"]][group["state"]] = group["__count"]
    return counts


def _state_counts(su, active: dict[int, dict[str, int]], finished: dict[str, int]) -> dict:
    """Queued, running and waiting for a retry: now; completed, failed (for good, or not to be
    retried automatically) and cancelled: ``finished`` in the last 24 hours."""
    counts = dict.fromkeys(STATE_COUNTS, 0)
    for by_state in active.values():
        for state, count in by_state.items():
            counts[state] += count
    counts["retry_waiting"] = su[JOB].search_count(RETRY_PENDING)
    counts.update(finished)
    return counts


def _live_workers(su, now: dt.datetime) -> list[dict]:
    workers = su[WORKER].search([("is_live", "=", True)], order="name")
    rows = workers.read(
        ["name", "host", "pid", "last_beat_at", "slots", "running_jobs", "provider_ids"]
    )
    for row in rows:
        beat = row["last_beat_at"] or None
        row["last_beat_at"] = beat
        row["beat_age_seconds"] = max((now - beat).total_seconds(), 0.0) if beat else None
    return rows


def _queue_briefs(su, queues, active, workers: list[dict], now: dt.datetime) -> list[dict]:
    """Per queue: configuration, health, backlog, running, saturation, oldest queued job, live
    workers, and the jobs finished in the last hour (``finished_hour``: completed, failed)."""
    oldest = {
        group["provider_id"]: group["queued_at:min"]
        for group in su[JOB].read_group(
            [("state", "=", "queued")], ["provider_id"], ["queued_at:min"]
        )
    }
    finished_hour = _finished_since(su, now - dt.timedelta(hours=1), now)
    briefs = []
    for queue in queues:
        provider_id = queue.provider_id.id
        counts = active.get(provider_id, {})
        running, limit = counts.get("running", 0), queue.max_concurrent_jobs
        queued_at = oldest.get(provider_id)
        brief = {
            "id": queue.id,
            "name": queue.name,
            "provider_id": provider_id,
            "provider_name": queue.provider_id.name,
            "enabled": queue.enabled,
            "backlog": counts.get("queued", 0),
            "running": running,
            "limit": limit,
            "saturation": running / limit if limit > 0 else 0.0,
            "oldest_queued_age_seconds": (
                max((now - queued_at).total_seconds(), 0.0) if queued_at else None
            ),
            "live_workers": sum(
                1 for w in workers if not w["provider_ids"] or provider_id in w["provider_ids"]
            ),
            "attempt_deadline_seconds": queue.attempt_deadline_seconds,
            "finished_hour": finished_hour.get(provider_id, {"completed": 0, "failed": 0}),
        }
        brief["health"] = _health(brief)
        briefs.append(brief)
    return briefs


def _finished_since(su, since: dt.datetime, now: dt.datetime) -> dict[int, dict[str, int]]:
    groups = su[JOB].read_group(
        [
            ("state", "in", ["completed", "failed"]),
            ("completed_at", ">=", since),
            ("completed_at", "<=", now),
        ],
        ["provider_id", "state"],
    )
    counts: dict[int, dict[str, int]] = defaultdict(lambda: {"completed": 0, "failed": 0})
    for group in groups:
        counts[group["provider_id"]][group["state"]] += group["__count"]
    return counts


def _health(brief: dict) -> str:
    """The queue model's rule of health (llm_generation_queue), on the counts at hand: the
    model's field counts every job of the queue, too slow for a dashboard."""
    saturated = brief["running"] >= brief["limit"]
    if not brief["enabled"]:
        return "disabled"
    if (saturated and brief["backlog"] > 2 * brief["limit"]) or _failing(brief):
        return "critical"
    return "warning" if saturated else "healthy"


def _failing(brief: dict) -> bool:
    finished = brief["finished_hour"]["completed"] + brief["finished_hour"]["failed"]
    return (
        finished >= FAILURE_RATE_MIN_JOBS
        and brief["finished_hour"]["failed"] / finished > FAILURE_RATE_CRITICAL
    )


def _throughput(su, now: dt.datetime) -> tuple[dict[int, dict[str, list[dict]]], dict]:
    """Completed and failed jobs per provider, oldest first (the last bucket is the current
    one): the last hour in 5-minute buckets (a grouped count each), the last day in hours;
    and the jobs finished in the last 24 hours per state, from the same grouped count."""
    hour_start = _floor(now, HOUR_BUCKET) - (HOUR_BUCKETS - 1) * HOUR_BUCKET
    day_start = _floor(now, DAY_BUCKET) - (DAY_BUCKETS - 1) * DAY_BUCKET

    def empty(start: dt.datetime, step: dt.timedelta, count: int) -> list[dict]:
        return [{"start": start + i * step, "completed": 0, "failed": 0} for i in range(count)]

    series: dict[int, dict[str, list[dict]]] = defaultdict(
        lambda: {
            "hour": empty(hour_start, HOUR_BUCKET, HOUR_BUCKETS),
            "day": empty(day_start, DAY_BUCKET, DAY_BUCKETS),
        }
    )
    for index in range(HOUR_BUCKETS):
        start = hour_start + index * HOUR_BUCKET
        window = [
            ("state", "in", ["completed", "failed"]),
            ("completed_at", ">=", start),
            ("completed_at", "<", start + HOUR_BUCKET),
        ]
        for group in su[JOB].read_group(window, ["provider_id", "state"]):
            series[group["provider_id"]]["hour"][index][group["state"]] = group["__count"]
    since = now - dt.timedelta(hours=24)
    day = [("completed_at", ">=", since), ("completed_at", "<=", now)]
    finished = dict.fromkeys(FINISHED_STATES, 0)
    groups = su[JOB].read_group(
        [("state", "in", list(FINISHED_STATES)), *day],
        ["provider_id", "state", "completed_at:hour"],
    )
    for group in groups:
        finished[group["state"]] += group["__count"]
        index = int((group["completed_at:hour"] - day_start) / DAY_BUCKET)
        if group["state"] != "cancelled" and 0 <= index < DAY_BUCKETS:
            series[group["provider_id"]]["day"][index][group["state"]] += group["__count"]
    finished["failed"] -= su[JOB].search_count([*RETRY_PENDING, *day])  # not finished yet
    return series, finished


def _floor(moment: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return epoch + ((moment - epoch) // step) * step


def _window(series: list[dict]) -> dict:
    completed = sum(bucket["completed"] for bucket in series)
    failed = sum(bucket["failed"] for bucket in series)
    finished = completed + failed
    return {
        "completed": completed,
        "failed": failed,
        "success_rate": 100.0 * completed / finished if finished else None,
        "series": series,
    }


def _hour_sample(su, now: dt.datetime) -> dict:
    """The last hour's completed attempts (up to SAMPLE_LIMIT, the most recent) with their
    replies: time to first token, tokens per second (after the first token), tokens and
    finish reasons, overall and per provider."""
    attempts = su[ATTEMPT].search(
        [
            ("outcome", "=", "completed"),
            ("ended_at", ">=", now - dt.timedelta(hours=1)),
            ("ended_at", "<=", now),
        ],
        order="ended_at desc",
        limit=SAMPLE_LIMIT,
    )
    rows = attempts.read(
        ["job_id", "provider_id", "first_token_at", "ended_at", "time_to_first_token"]
    )
    jobs = su[JOB].browse(sorted({row["job_id"] for row in rows}))
    reply_of = {job["id"]: job["output_message_id"] for job in jobs.read(["output_message_id"])}
    replies = su[MESSAGE].browse(sorted({m for m in reply_of.values() if m}))
    reply = {
        message["id"]: message
        for message in replies.read(["prompt_tokens", "completion_tokens", "finish_reason"])
    }
    by_provider: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    prompt_tokens = completion_tokens = 0
    finish_reasons: dict[str, int] = defaultdict(int)
    everything: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        figures = by_provider[row["provider_id"]]
        if row["first_token_at"]:
            ttft_ms = (row["time_to_first_token"] or 0.0) * 1000.0
            figures["ttft_ms"].append(ttft_ms)
            everything["ttft_ms"].append(ttft_ms)
        message = reply.get(reply_of.get(row["job_id"]))
        if not message:
            continue
        prompt_tokens += message["prompt_tokens"] or 0
        completion_tokens += message["completion_tokens"] or 0
        finish_reasons[message["finish_reason"] or "unknown"] += 1
        rate = _tokens_per_second(message["completion_tokens"], row)
        if rate is not None:
            figures["tokens_per_second"].append(rate)
            everything["tokens_per_second"].append(rate)
    return {
        "by_provider": by_provider,
        "llm": {
            "completion_tokens_hour": completion_tokens,
            "prompt_tokens_hour": prompt_tokens,
            "ttft_p50_ms": _median(everything["ttft_ms"]),
            "ttft_p95_ms": _percentile(everything["ttft_ms"], 0.95),
            "tokens_per_second_p50": _median(everything["tokens_per_second"]),
            "finish_reasons": dict(finish_reasons),
            "sample_size": len(rows),
            "sampled": len(rows) >= SAMPLE_LIMIT,
        },
    }


def _tokens_per_second(completion_tokens: int | None, attempt: dict) -> float | None:
    """The reply's rate after its first token (the provider's decoding speed)."""
    first, ended = attempt["first_token_at"], attempt["ended_at"]
    if not completion_tokens or completion_tokens < 2 or not first or not ended:
        return None
    seconds = (ended - first).total_seconds()
    return (completion_tokens - 1) / seconds if seconds > 0 else None


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


# -- job lists ------------------------------------------------------------------------------
def failure_groups(
    env, since: dt.datetime, now: dt.datetime, limit: int = FAILURE_GROUPS
) -> list[dict]:
    """Failed and lost attempts since ``since``, grouped by provider and normalized error,
    the most frequent first: counted over every user's jobs; the example (the latest job) is
    one the caller may see, None when they may see none."""
    su, manager = env(su=True), is_manager(env)
    domain = [
        ("outcome", "in", ["failed", "lost"]),
        ("ended_at", ">=", since),
        ("ended_at", "<=", now),
    ]
    merged: dict[tuple[int, str], dict] = {}

    def example(key: tuple[int, str], job_id: int | None) -> None:
        entry = merged.get(key)
        if entry is not None and job_id:
            entry["example_job_id"] = max(entry["example_job_id"] or 0, job_id)

    counted = ["__count", "ended_at:max", *(["job_id:max"] if manager else [])]
    for key, group in _by_error(su[ATTEMPT], domain, counted):
        entry = merged.setdefault(
            key, {"count": 0, "last_at": group["ended_at:max"], "example_job_id": None}
        )
        entry["count"] += group["__count"]
        entry["last_at"] = max(entry["last_at"], group["ended_at:max"])
        if manager:
            example(key, group["job_id:max"])
    if not manager:  # the caller's own attempts
        for key, group in _by_error(env[ATTEMPT], domain, ["job_id:max"]):
            example(key, group["job_id:max"])
    top = sorted(merged.items(), key=lambda item: (-item[1]["count"], item[0][1]))[:limit]
    names = _provider_names(su, [provider_id for (provider_id, _error), _entry in top])
    return [
        {"error": error, "provider_name": names.get(provider_id, ""), **entry}
        for (provider_id, error), entry in top
    ]


def _by_error(attempts, domain: list, aggregates: list[str]):
    """``read_group`` of ``attempts`` by provider and error, keyed by (provider, normalized
    error)."""
    for group in attempts.read_group(domain, ["provider_id", "error_message"], aggregates):
        yield (group["provider_id"], normalize_error(group["error_message"])), group


def long_running(env, queues, now: dt.datetime) -> list[dict]:
    """The caller's running jobs running longer than LONG_RUNNING_SECONDS, or than half their
    queue's attempt deadline when that is shorter; the longest first."""
    terms = []
    for queue in queues:
        limit = min(LONG_RUNNING_SECONDS, queue.attempt_deadline_seconds / 2)
        since = now - dt.timedelta(seconds=limit)
        terms.append(["&", ("provider_id", "=", queue.provider_id.id), ("started_at", "<", since)])
    others = now - dt.timedelta(seconds=LONG_RUNNING_SECONDS)
    terms.append(
        [
            "&",
            ("provider_id", "not in", queues.mapped("provider_id").ids),
            ("started_at", "<", others),
        ]
    )
    late = ["|"] * (len(terms) - 1) + [token for term in terms for token in term]
    jobs = env[JOB].search(
        [("state", "=", "running"), *late], order="started_at, id", limit=LIST_LIMIT
    )
    return job_summaries(jobs, now)


def stalled(env, now: dt.datetime) -> list[dict]:
    """The caller's running jobs that no live worker holds, each with the reason."""
    orphans = JobStore(env).orphans(now)
    return [
        {**summary, "reason": _orphan_reason(orphan)}
        for orphan, summary in _visible_orphans(env, orphans, now)[:LIST_LIMIT]
    ]


def _visible_orphans(env, orphans: list[Orphan], now: dt.datetime) -> list[tuple[Orphan, dict]]:
    if not orphans:
        return []
    by_job = {orphan.job_id: orphan for orphan in orphans}
    visible = env[JOB].search([("id", "in", list(by_job))], order="started_at, id")
    return [(by_job[summary["id"]], summary) for summary in job_summaries(visible, now)]


def _orphan_reason(orphan: Orphan) -> str:
    worker = orphan.worker or "unknown"
    if orphan.expired:
        return (
            f"Running, but its lease expired at {_clock(orphan.expires_at)}: its worker "
            f"{worker} died or froze. Live workers take such a job back within seconds; "
            "still here, none is running: `llmjobs diagnostics --fix-stuck` takes it back now."
        )
    beat = f" (last beat at {_clock(orphan.last_beat_at)})" if orphan.last_beat_at else ""
    return (
        f"Running on worker {worker}, which is no longer live{beat}: it died before its lease "
        f"expires at {_clock(orphan.expires_at)}, when the job is taken back; "
        "`llmjobs diagnostics --fix-stuck` takes it back now."
    )


def job_summaries(jobs, now: dt.datetime) -> list[dict]:
    """``jobs`` (searched as the caller) as the dashboard lists them: the worker is that of
    their running attempt."""
    if not jobs:
        return []
    su = jobs.env(su=True)
    rows = jobs.read(["name", "state", "provider_id", "started_at", "queued_at"])
    running = su[ATTEMPT].search([("job_id", "in", jobs.ids), ("outcome", "=", "running")])
    workers = {
        attempt["job_id"]: attempt["worker"] for attempt in running.read(["job_id", "worker"])
    }
    names = _provider_names(su, [row["provider_id"] for row in rows])
    summaries = []
    for row in rows:
        started = row["started_at"] or None
        summaries.append(
            {
                "id": row["id"],
                "name": row["name"] or "",
                "state": row["state"],
                "provider_name": names.get(row["provider_id"], ""),
                "worker": workers.get(row["id"]) or None,
                "started_at": started,
                "running_seconds": (
                    max((now - started).total_seconds(), 0.0)
                    if started and row["state"] == "running"
                    else None
                ),
                "queued_at": row["queued_at"] or None,
            }
        )
    return summaries


def _provider_names(su, provider_ids) -> dict[int, str]:
    providers = su["llm.provider"].browse(sorted({p for p in provider_ids if p}))
    return {row["id"]: row["name"] for row in providers.read(["name"])}


def _clock(moment: dt.datetime | None) -> str:
    return f"{moment:%H:%M:%S} UTC" if moment else "an unknown time"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


# -- diagnosis ------------------------------------------------------------------------------
def diagnose(env, now: dt.datetime | None = None, errors_since_hours: float = 24) -> dict:
    """What is wrong, why, and what fixes it (see the module docstring)."""
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
        if _failing(brief):
            finished = brief["finished_hour"]
            problems.append(
                f"Queue '{name}' is failing: {finished['failed']} of the "
                f"{finished['completed'] + finished['failed']} jobs finished in the last hour "
                "failed (`llmjobs diagnostics --show-errors` groups their errors)."
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


# -- fixing ---------------------------------------------------------------------------------
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
