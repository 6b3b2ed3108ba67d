"""Queues and workers over HTTP.

::

    GET   /api/queues               every queue: configuration, live counts, health, stats
    GET   /api/queues/{id}
    PATCH /api/queues/{id}          (LLM managers) limits, retry policy, execution mode and
                                    provider batches
    POST  /api/queues/{id}/pause    (LLM managers) start no more jobs
    POST  /api/queues/{id}/resume   (LLM managers)
    GET   /api/workers              (LLM managers) workers: last beat, slots, running jobs

Every user may read the queues (their health and backlog are what a user waits on); the
statistics count every user's jobs but show none of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from core.http import CurrentUser, Principal, require_group, visible_record

MANAGER = "llm_thread.group_llm_manager"
Manager = Annotated[Principal, Depends(require_group(MANAGER, "LLM managers"))]

router = APIRouter(prefix="/api", tags=["queues"])


class QueuePatch(BaseModel):
    max_concurrent_jobs: int | None = Field(None, ge=1, le=10_000)
    auto_retry_failed: bool | None = None
    retry_delay_minutes: int | None = Field(None, ge=0, le=10_080)
    attempt_deadline_seconds: float | None = Field(None, gt=0, le=7 * 86400)
    execution_mode: Literal["stream", "background"] | None = Field(
        None, description="How its jobs' replies are generated unless a job asks otherwise"
    )
    batch_unattended: bool | None = Field(
        None, description="Jobs created with interactive=false go in provider batches"
    )
    batch_max_size: int | None = Field(None, ge=1, le=100_000)
    batch_max_wait_seconds: float | None = Field(None, ge=0, le=86400)
    batch_requeue_unfinished: bool | None = Field(
        None, description="A request a batch never ran is queued again, to be streamed"
    )
    rpm_limit: int | None = Field(None, ge=0, le=10_000_000, description="0: no limit")
    tpm_limit: int | None = Field(None, ge=0, le=1_000_000_000, description="0: no limit")
    breaker_threshold: int | None = Field(
        None, ge=0, le=10_000, description="Retryable failures in a row that cool it down"
    )
    breaker_cooldown_seconds: float | None = Field(None, gt=0, le=86400)
    fair_share: Literal["none", "user"] | None = None
    adaptive_concurrency: bool | None = None
    min_concurrency: int | None = Field(None, ge=1, le=10_000)


class Cooldown(BaseModel):
    """The queue's circuit breaker: closed (normal), open (cooled down until ``until``: one
    probe then), half_open (a probe decides)."""

    state: str
    reason: str | None
    since: dt.datetime | None
    until: dt.datetime | None
    consecutive_failures: int


class QueueOut(BaseModel):
    id: int
    name: str
    provider_id: int
    provider_name: str
    enabled: bool
    max_concurrent_jobs: int
    auto_retry_failed: bool
    retry_delay_minutes: int
    attempt_deadline_seconds: float
    execution_mode: str
    batch_unattended: bool
    batch_max_size: int
    batch_max_wait_seconds: float
    batch_requeue_unfinished: bool
    rpm_limit: int
    tpm_limit: int
    breaker_threshold: int
    breaker_cooldown_seconds: float
    fair_share: str
    adaptive_concurrency: bool
    min_concurrency: int
    concurrency_now: int = Field(description="How many may run at once now (adaptive)")
    cooldown: Cooldown
    throttled_until: dt.datetime | None = Field(
        description="The provider asked every worker to wait until then"
    )
    waiting_reason: str | None = Field(description="Why its queued jobs wait, if they do")
    usage: dict[str, float] = Field(
        description="Over the last `window_hours` hours: prompt, completion tokens and cost"
    )
    running_batches: int = Field(description="Its provider batches not ended yet")
    batch_jobs: int = Field(description="Its running jobs that are in provider batches")
    health: str
    live_workers: int
    job_counts: dict[str, int]
    performance: dict[str, Any] = Field(description="Over the last `window_hours` hours")
    last_processed_at: dt.datetime | None


class WorkerOut(BaseModel):
    id: int
    name: str
    host: str
    pid: int
    live: bool
    started_at: dt.datetime
    last_beat_at: dt.datetime | None
    stopped_at: dt.datetime | None
    slots: int
    running_jobs: int
    queues: list[str] = Field(description="Provider names it serves; empty: every queue")


def queue_out(queue, window_hours: float = 24) -> QueueOut:
    stats = queue.sudo().get_queue_stats(window_hours)
    workers = queue.env["llm.generation.worker"].live_count(queue.provider_id.id)
    return QueueOut(
        id=queue.id,
        name=queue.name,
        provider_id=queue.provider_id.id,
        provider_name=stats["provider_name"],
        enabled=queue.enabled,
        max_concurrent_jobs=queue.max_concurrent_jobs,
        auto_retry_failed=queue.auto_retry_failed,
        retry_delay_minutes=queue.retry_delay_minutes,
        attempt_deadline_seconds=queue.attempt_deadline_seconds,
        execution_mode=queue.execution_mode,
        batch_unattended=queue.batch_unattended,
        batch_max_size=queue.batch_max_size,
        batch_max_wait_seconds=queue.batch_max_wait_seconds,
        batch_requeue_unfinished=queue.batch_requeue_unfinished,
        running_batches=queue.env["llm.generation.batch"]
        .sudo()
        .search_count(
            [("provider_id", "=", queue.provider_id.id), ("state", "in", ["submitting", "running"])]
        ),
        batch_jobs=queue.batch_jobs_count,
        rpm_limit=queue.rpm_limit,
        tpm_limit=queue.tpm_limit,
        breaker_threshold=queue.breaker_threshold,
        breaker_cooldown_seconds=queue.breaker_cooldown_seconds,
        fair_share=queue.fair_share or "none",
        adaptive_concurrency=queue.adaptive_concurrency,
        min_concurrency=queue.min_concurrency,
        concurrency_now=queue._concurrency(),
        cooldown=Cooldown(
            state=queue.breaker_state or "closed",
            reason=queue.breaker_reason or None,
            since=queue.breaker_since or None,
            until=queue.breaker_until or None,
            consecutive_failures=queue.consecutive_failures,
        ),
        throttled_until=queue.throttled_until or None,
        waiting_reason=queue.waiting_reason or None,
        usage=stats["usage"],
        health=stats["queue_health"],
        live_workers=workers,
        job_counts=stats["job_counts"],
        performance=stats["performance"],
        last_processed_at=stats["last_processed_at"],
    )


def worker_out(worker) -> WorkerOut:
    return WorkerOut(
        id=worker.id,
        name=worker.name,
        host=worker.host,
        pid=worker.pid,
        live=worker.is_live,
        started_at=worker.started_at,
        last_beat_at=worker.last_beat_at or None,
        stopped_at=worker.stopped_at or None,
        slots=worker.slots,
        running_jobs=worker.running_jobs,
        queues=worker.provider_ids.sudo().mapped("name"),
    )


@router.get("/queues")
def list_queues(
    user: CurrentUser, window_hours: float = Query(24, gt=0, le=24 * 31)
) -> list[QueueOut]:
    with user.environment(readonly=True) as env:
        return [queue_out(q, window_hours) for q in env["llm.generation.queue"].search([])]


@router.get("/queues/{queue_id}")
def read_queue(
    queue_id: int, user: CurrentUser, window_hours: float = Query(24, gt=0, le=24 * 31)
) -> QueueOut:
    with user.environment(readonly=True) as env:
        queue = visible_record(env, "llm.generation.queue", queue_id, "Queue")
        return queue_out(queue, window_hours)


@router.patch("/queues/{queue_id}")
def update_queue(queue_id: int, body: QueuePatch, user: Manager) -> QueueOut:
    with user.environment() as env:
        queue = visible_record(env, "llm.generation.queue", queue_id, "Queue")
        values = body.model_dump(exclude_unset=True, exclude_none=True)
        if values:
            queue.write(values)
        return queue_out(queue)


@router.post("/queues/{queue_id}/pause")
def pause_queue(queue_id: int, user: Manager) -> QueueOut:
    """Start no more jobs from this queue (running ones finish)."""
    with user.environment() as env:
        queue = visible_record(env, "llm.generation.queue", queue_id, "Queue")
        queue.action_disable()
        return queue_out(queue)


@router.post("/queues/{queue_id}/resume")
def resume_queue(queue_id: int, user: Manager) -> QueueOut:
    with user.environment() as env:
        queue = visible_record(env, "llm.generation.queue", queue_id, "Queue")
        queue.action_enable()
        return queue_out(queue)


@router.get("/workers", tags=["workers"])
def list_workers(
    user: Manager, include_stopped: bool = Query(False, description="Stopped and dead ones too")
) -> list[WorkerOut]:
    with user.environment(readonly=True) as env:
        domain = [] if include_stopped else [("is_live", "=", True)]
        workers = env["llm.generation.worker"].search(domain, order="id desc")
        return [worker_out(w) for w in workers]
