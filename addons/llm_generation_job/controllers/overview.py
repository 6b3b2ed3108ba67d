"""The dashboard's figures and the diagnosis over HTTP (monitoring.py computes them).

::

    GET  /api/overview                  counts per state, queue cards, the last hour's LLM
                                        figures, failures grouped by error, long-running and
                                        stalled jobs, live workers (any user: the job lists
                                        hold only the user's own jobs; managers see all)
    GET  /api/diagnostics               (LLM managers) what is stuck and why, failure rates,
                                        recurring errors, problems (empty: healthy)
    POST /api/diagnostics/fix-stuck     (LLM managers) take back what dead workers left,
                                        requeue overdue retries; what was done, and the
                                        diagnosis after it
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from core.http import CurrentUser, Principal, require_group

from .. import monitoring

Manager = Annotated[Principal, Depends(require_group(monitoring.MANAGER_GROUP, "LLM managers"))]

router = APIRouter(prefix="/api", tags=["monitoring"])

Health = Literal["healthy", "warning", "critical", "disabled"]


class Bucket(BaseModel):
    start: dt.datetime
    completed: int
    failed: int


class Window(BaseModel):
    completed: int
    failed: int
    success_rate: float | None = Field(description="Percent of the finished jobs that completed")
    series: list[Bucket] = Field(description="Oldest first; the last bucket is the current one")


class QueueBrief(BaseModel):
    id: int
    name: str
    provider_name: str
    enabled: bool
    health: Health
    backlog: int = Field(description="Queued jobs")
    running: int
    limit: int = Field(description="max_concurrent_jobs")
    oldest_queued_age_seconds: float | None
    live_workers: int


class QueueCard(QueueBrief):
    provider_id: int
    saturation: float = Field(description="running / limit")
    hour: Window = Field(description="The last hour, in 5-minute buckets")
    day: Window = Field(description="The last day, in one-hour buckets")
    ttft_p50_ms: float | None = Field(description="Time to first token, last hour")
    tokens_per_second: float | None = Field(description="Median reply speed, last hour")


class LlmFigures(BaseModel):
    completion_tokens_hour: int
    prompt_tokens_hour: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    tokens_per_second_p50: float | None
    finish_reasons: dict[str, int]
    sample_size: int = Field(description="Completed attempts of the last hour counted")
    sampled: bool = Field(description="More completed in the last hour than were counted")


class FailureGroup(BaseModel):
    error: str = Field(description="Normalized: alike errors group together")
    count: int
    last_at: dt.datetime
    provider_name: str
    example_job_id: int | None = Field(description="The latest such job you may see")


class JobSummary(BaseModel):
    id: int
    name: str
    state: str
    provider_name: str
    worker: str | None
    started_at: dt.datetime | None
    running_seconds: float | None
    queued_at: dt.datetime | None


class StalledJob(JobSummary):
    reason: str


class WorkerCard(BaseModel):
    id: int
    name: str
    host: str
    pid: int
    last_beat_at: dt.datetime | None
    beat_age_seconds: float | None
    slots: int
    running_jobs: int


class Overview(BaseModel):
    generated_at: dt.datetime
    state_counts: dict[str, int] = Field(
        description="queued, running, retry_waiting: now; completed, failed, cancelled: "
        "finished in the last 24 hours"
    )
    queues: list[QueueCard]
    llm: LlmFigures
    failure_groups: list[FailureGroup] = Field(description="The last 24 hours, top 10")
    long_running: list[JobSummary]
    stalled: list[StalledJob]
    workers: list[WorkerCard] = Field(description="Live workers")


class StuckJob(JobSummary):
    kind: Literal[
        "lease_expired",
        "worker_gone",
        "queue_paused",
        "no_worker",
        "retry_overdue",
        "external_unpolled",
    ]
    reason: str
    fix: Literal["requeue", "fail", "cancel", "retry"] | None = Field(
        description="What `fix-stuck` does to it (None: it needs a person)"
    )


class FailureRate(BaseModel):
    provider_name: str
    model_name: str | None
    finished: int
    failed: int
    rate: float = Field(description="Percent of the finished jobs that failed")


class Diagnosis(BaseModel):
    generated_at: dt.datetime
    workers_alive: int
    workers: list[WorkerCard]
    queues: list[QueueBrief]
    stuck: list[StuckJob]
    failure_rates: list[FailureRate]
    recurring_errors: list[FailureGroup]
    problems: list[str] = Field(description="Empty when healthy")


class FixResult(BaseModel):
    done: list[str] = Field(description="A sentence per job acted on")
    diagnosis: Diagnosis = Field(description="After the fixes")


@router.get("/overview")
def read_overview(user: CurrentUser) -> Overview:
    with user.environment(readonly=True) as env:
        return Overview.model_validate(monitoring.overview(env))


@router.get("/diagnostics")
def read_diagnostics(
    user: Manager,
    errors_since_hours: float = Query(24, gt=0, le=24 * 31, description="Window of the errors"),
) -> Diagnosis:
    with user.environment(readonly=True) as env:
        return Diagnosis.model_validate(
            monitoring.diagnose(env, errors_since_hours=errors_since_hours)
        )


@router.post("/diagnostics/fix-stuck")
def fix_stuck(user: Manager) -> FixResult:
    with user.environment() as env:
        done = monitoring.fix_stuck(env)
    with user.environment(readonly=True) as env:
        return FixResult(done=done, diagnosis=monitoring.diagnose(env))
