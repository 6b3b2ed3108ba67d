"""What the overview and the diagnosis share: windows, counts, queue briefs, failure groups,
stalled jobs, job summaries, and the wording of ages and counts."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections import defaultdict

from ..models.llm_generation_job import MANAGER_GROUP
from ..models.llm_generation_queue import FAILURE_RATE_CRITICAL, FAILURE_RATE_MIN_JOBS
from ..store import JobStore, Orphan

JOB, ATTEMPT, QUEUE = "llm.generation.job", "llm.generation.job.attempt", "llm.generation.queue"
WORKER, MESSAGE = "llm.generation.worker", "llm.message"
LIST_LIMIT = 50  # jobs per list (long-running, stalled, each kind of stuck job)
FAILURE_GROUPS = 10
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


def _active_counts(su) -> dict[int, dict[str, int]]:
    """Queued jobs, and jobs running in workers (not in provider batches), per provider."""
    active = [
        "|",
        ("state", "=", "queued"),
        "&",
        ("state", "=", "running"),
        ("batch_id", "=", False),
    ]
    groups = su[JOB].read_group(active, ["provider_id", "state"], ["__count"])
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for group in groups:
        counts[group["provider_id"]][group["state"]] = group["__count"]
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
            "cooldown": queue.breaker_state or "closed",
            "waiting_reason": queue.waiting_reason or None,
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
    if (
        (saturated and brief["backlog"] > 2 * brief["limit"])
        or _failing(brief)
        or brief["cooldown"] == "open"
    ):
        return "critical"
    return "warning" if saturated else "healthy"


def _failing(brief: dict) -> bool:
    finished = brief["finished_hour"]["completed"] + brief["finished_hour"]["failed"]
    return (
        finished >= FAILURE_RATE_MIN_JOBS
        and brief["finished_hour"]["failed"] / finished > FAILURE_RATE_CRITICAL
    )


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
