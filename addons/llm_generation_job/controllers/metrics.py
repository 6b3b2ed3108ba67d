"""``GET /metrics``: the queues, jobs and workers in Prometheus's text format.

Only LLM managers may scrape it, with an API key (``Authorization: Bearer``; 401 without one,
403 for other users). Every figure is read from the database at scrape time, in one read-only
superuser transaction: every API process answers the same, and the figures include the
workers of every machine. Label ``queue`` is the provider's name.

Gauges:

- ``llmjobs_jobs{queue,state}``: jobs per state (every state, zeros included);
- ``llmjobs_queue_depth``, ``_running``, ``_limit`` (max_concurrent_jobs), ``_enabled`` (1/0),
  ``_oldest_queued_age_seconds`` (0 when none), ``llmjobs_queue_health{queue,health}`` (1 for
  the current health, 0 for the others): per queue;
- ``llmjobs_workers_live``, and ``llmjobs_worker_slots`` and ``llmjobs_worker_running_jobs``
  summed over the live workers.

Counters and histograms (what they count: models/llm_generation_metric.py):

- ``llmjobs_attempts_total{queue,outcome}``, ``llmjobs_retries_total{queue}``,
  ``llmjobs_failures_total{queue,kind}``;
- ``llmjobs_tokens_total{queue,kind}`` (prompt, completion, cached) and
  ``llmjobs_cost_usd_total{queue}``: the usage ledger's sums (it keeps every attempt's row);
- ``llmjobs_time_to_first_token_seconds{queue}``, ``llmjobs_queue_wait_seconds{queue}``,
  ``llmjobs_job_duration_seconds{queue}``.

They never go back: what the jobs deleted by ``cleanup_old_jobs`` counted is kept in totals
(Prometheus would read a decrease as a restart). Their count, sum and buckets are computed by
the database, not from rows loaded here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from core.http import Principal, require_group

from ..models.llm_generation_job import MANAGER_GROUP, STATES
from ..models.llm_generation_job_attempt import OUTCOMES
from ..models.llm_generation_metric import HISTOGRAMS, TOTAL, Figures, bucket_label
from ..models.llm_generation_queue import HEALTH

Manager = Annotated[Principal, Depends(require_group(MANAGER_GROUP, "LLM managers"))]

router = APIRouter(tags=["metrics"])

JOB, QUEUE, WORKER = "llm.generation.job", "llm.generation.queue", "llm.generation.worker"
ENDED_OUTCOMES = [outcome for outcome, _ in OUTCOMES if outcome != "running"]
ERROR_KINDS = ["retryable", "permanent"]
HISTOGRAM_METRICS = {  # family -> name and help
    "ttft": (
        "llmjobs_time_to_first_token_seconds",
        "Seconds from an attempt's start to its first piece of reply.",
    ),
    "queue_wait": (
        "llmjobs_queue_wait_seconds",
        "Seconds jobs waited in their queue (jobs that started and completed or were cancelled).",
    ),
    "duration": ("llmjobs_job_duration_seconds", "Seconds completed jobs ran."),
}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(user: Manager) -> Response:
    """The queues, jobs and workers, for Prometheus (LLM managers, with an API key)."""
    registry = CollectorRegistry()
    with user.registry.environment(readonly=True) as env:
        registry.register(JobsCollector(env))
        body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class JobsCollector:
    """A prometheus_client collector reading ``env``'s database when collected."""

    def __init__(self, env) -> None:
        self.env = env

    def collect(self) -> Iterator[Metric]:
        env = self.env
        queues = env[QUEUE].search([])
        counts = _state_counts(env)
        figures = env[TOTAL].current()
        names = sorted(
            {queue.provider_id.name for queue in queues}
            | set(counts)
            | {queue for _, queue, _ in figures}
        )
        yield _jobs_gauge(counts, names)
        yield from _queue_gauges(env, queues, counts)
        yield from _worker_gauges(env)
        yield from _counters(figures, names)
        yield from _usage_counters(env, names)
        for family, (name, documentation) in HISTOGRAM_METRICS.items():
            yield _histogram(name, documentation, family, figures, names)


def _state_counts(env) -> dict[str, dict[str, int]]:
    """Jobs per provider name and state."""
    groups = env[JOB].read_group([], ["provider_id", "state"], ["__count"])
    providers = env["llm.provider"].browse(sorted({g["provider_id"] for g in groups}))
    names = {provider.id: provider.name for provider in providers}
    counts: dict[str, dict[str, int]] = {}
    for group in groups:
        counts.setdefault(names[group["provider_id"]], {})[group["state"]] = group["__count"]
    return counts


def _jobs_gauge(counts: dict[str, dict[str, int]], names: list[str]) -> Metric:
    gauge = GaugeMetricFamily("llmjobs_jobs", "Jobs per state.", labels=["queue", "state"])
    for name in names:
        for state, _ in STATES:
            gauge.add_metric([name, state], counts.get(name, {}).get(state, 0))
    return gauge


def _queue_gauges(env, queues, counts: dict[str, dict[str, int]]) -> Iterator[Metric]:
    def gauge(suffix: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"llmjobs_queue_{suffix}", documentation, labels=["queue"])

    depth = gauge("depth", "Queued jobs.")
    running = gauge("running", "Running jobs.")
    limit = gauge("limit", "Jobs the queue runs at once at most (max_concurrent_jobs).")
    enabled = gauge("enabled", "1 when the queue starts jobs, 0 when paused.")
    oldest = gauge("oldest_queued_age_seconds", "Age of the oldest queued job (0: none).")
    health = GaugeMetricFamily(
        "llmjobs_queue_health",
        "1 for the queue's health, 0 for the others.",
        labels=["queue", "health"],
    )
    queued_since = _oldest_queued(env)
    now = dt.datetime.now(dt.UTC)
    for queue in queues:
        name = queue.provider_id.name
        by_state = counts.get(name, {})
        depth.add_metric([name], by_state.get("queued", 0))
        running.add_metric([name], by_state.get("running", 0))
        limit.add_metric([name], queue.max_concurrent_jobs)
        enabled.add_metric([name], 1 if queue.enabled else 0)
        since = queued_since.get(queue.provider_id.id)
        oldest.add_metric([name], max((now - since).total_seconds(), 0.0) if since else 0.0)
        for value, _ in HEALTH:
            health.add_metric([name, value], 1 if queue.health == value else 0)
    yield from (depth, running, limit, enabled, oldest, health)


def _oldest_queued(env) -> dict[int, dt.datetime]:
    groups = env[JOB].read_group([("state", "=", "queued")], ["provider_id"], ["queued_at:min"])
    return {g["provider_id"]: g["queued_at:min"] for g in groups if g["queued_at:min"]}


def _worker_gauges(env) -> Iterator[Metric]:
    [live] = env[WORKER].read_group(
        [("is_live", "=", True)], [], ["__count", "slots:sum", "running_jobs:sum"]
    )
    yield GaugeMetricFamily("llmjobs_workers_live", "Live workers.", value=live["__count"])
    yield GaugeMetricFamily(
        "llmjobs_worker_slots", "Jobs the live workers run at once.", value=live["slots:sum"] or 0
    )
    yield GaugeMetricFamily(
        "llmjobs_worker_running_jobs",
        "Jobs the live workers run (as of their last beat).",
        value=live["running_jobs:sum"] or 0,
    )


def _counters(figures: Figures, names: list[str]) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "llmjobs_attempts_total", "Ended attempts, by outcome.", labels=["queue", "outcome"]
    )
    retries = CounterMetricFamily(
        "llmjobs_retries_total", "Attempts after a job's first.", labels=["queue"]
    )
    failures = CounterMetricFamily(
        "llmjobs_failures_total",
        "Jobs failed for good (no automatic retry to come), by error kind.",
        labels=["queue", "kind"],
    )
    for name in names:
        for outcome in ENDED_OUTCOMES:
            attempts.add_metric([name, outcome], figures.get(("attempts", name, outcome), 0.0))
        retries.add_metric([name], figures.get(("retries", name, "count"), 0.0))
        for kind in ERROR_KINDS:
            failures.add_metric([name, kind], figures.get(("failures", name, kind), 0.0))
    yield from (attempts, retries, failures)


def _usage_counters(env, names: list[str]) -> Iterator[Metric]:
    tokens = CounterMetricFamily(
        "llmjobs_tokens_total",
        "Tokens of ended attempts (the usage ledger).",
        labels=["queue", "kind"],
    )
    cost = CounterMetricFamily(
        "llmjobs_cost_usd", "Cost in USD of ended attempts (the usage ledger).", labels=["queue"]
    )
    kinds = ("prompt_tokens", "completion_tokens", "cached_tokens")
    sums = {
        group["provider_id"]: group
        for group in env["llm.generation.usage"].read_group(
            [], ["provider_id"], [*(f"{kind}:sum" for kind in kinds), "cost:sum"]
        )
    }
    providers = env["llm.provider"].browse(list(sums)).exists()
    by_name = {provider.name: sums[provider.id] for provider in providers}
    for name in sorted(set(names) | set(by_name)):
        found = by_name.get(name, {})
        for kind in kinds:
            tokens.add_metric([name, kind.removesuffix("_tokens")], found.get(f"{kind}:sum") or 0)
        cost.add_metric([name], found.get("cost:sum") or 0.0)
    yield from (tokens, cost)


def _histogram(
    name: str, documentation: str, family: str, figures: Figures, names: list[str]
) -> Metric:
    histogram = HistogramMetricFamily(name, documentation, labels=["queue"])
    for queue in names:
        buckets = [
            (floatToGoString(bound), figures.get((family, queue, bucket_label(bound)), 0.0))
            for bound in HISTOGRAMS[family].bounds
        ]
        buckets.append(("+Inf", figures.get((family, queue, "count"), 0.0)))
        histogram.add_metric([queue], buckets, figures.get((family, queue, "sum"), 0.0))
    return histogram
