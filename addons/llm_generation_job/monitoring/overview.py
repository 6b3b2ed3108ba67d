"""The overview: what the dashboard shows (see the package docstring)."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import defaultdict

from ..store import FINISHED_STATES, RETRY_PENDING
from .common import (
    ATTEMPT,
    JOB,
    LIST_LIMIT,
    MESSAGE,
    QUEUE,
    _active_counts,
    _live_workers,
    _now,
    _queue_briefs,
    failure_groups,
    job_summaries,
    stalled,
)

LONG_RUNNING_SECONDS = 300.0  # or half the queue's attempt deadline, when that is shorter
SAMPLE_LIMIT = 5000  # the last hour's completed attempts read for percentiles and tokens
HOUR_BUCKET, HOUR_BUCKETS = dt.timedelta(minutes=5), 12
DAY_BUCKET, DAY_BUCKETS = dt.timedelta(hours=1), 24
STATE_COUNTS = ("queued", "running", "retry_waiting", *FINISHED_STATES)


def overview(env, now: dt.datetime | None = None) -> dict:
    """The dashboard's figures (see the package docstring); ``env``: any user."""
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
