"""Generation jobs over HTTP: the user's own, or every job for LLM managers.

::

    GET  /api/jobs                 filters (state, provider, model, user, thread, created and
                                   finished dates, free text over errors); newest first,
                                   paginated by cursor: pass ``next_cursor`` back as ``cursor``
    GET  /api/jobs/{id}            inputs, messages, error, the attempt timeline (each
                                   attempt's tokens and cost), what it spent in all, and
                                   where the job is at its provider (its batch or response)
    POST /api/jobs/{id}/cancel     (409 when it cannot be cancelled in its state)
    POST /api/jobs/{id}/retry
    POST /api/jobs/bulk/{action}   cancel or retry the jobs of ``ids``, or every job matching
                                   ``filter``; ``dry_run`` only counts them (to confirm first)

A bulk action applies to each job on its own (one refusal does not stop the others) and
answers with counts and the refusals' reasons.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from addons.llm_thread.controllers.threads import MessageOut, message_out
from core.exceptions import UserError
from core.http import CONFLICT, CurrentUser, conflict, visible_record

from ..job_filter import JobFilter

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
BULK_LIMIT = 10_000


class JobOut(BaseModel):
    id: int
    name: str
    state: str
    thread_id: int
    provider_id: int
    provider_name: str
    model_id: int | None
    user_id: int | None
    priority: int
    retry_count: int
    max_retries: int
    error_message: str | None
    error_kind: str | None
    next_retry_at: dt.datetime | None
    created_at: dt.datetime
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    queue_seconds: float | None
    duration_seconds: float | None
    can_cancel: bool
    can_retry: bool
    execution_mode: str = Field(description="stream, batch or background")
    waiting_reason: str | None = Field(
        None, description="Why a queued job is not started yet (a budget...), and"
    )
    eligible_at: dt.datetime | None = Field(None, description="when it is looked at again")


class ProviderJobOut(BaseModel):
    """Where the job is at its provider: its batch, or its background response."""

    kind: Literal["batch", "response"]
    id: str | None = Field(description="The provider's id (none while a batch is submitted)")
    state: str | None = Field(None, description="A batch's: submitting, running, ended, failed")
    provider_status: str | None = Field(None, description="The provider's own word for it")
    request_counts: dict[str, int] = Field(default_factory=dict)
    submitted_at: dt.datetime | None = None
    last_polled_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    error: str | None = None
    cursor: int | None = Field(None, description="A response's last event logged")


class AttemptOut(BaseModel):
    number: int
    worker: str | None
    started_at: dt.datetime
    first_token_at: dt.datetime | None
    ended_at: dt.datetime | None
    outcome: str
    error_message: str | None
    duration_seconds: float | None
    prompt_tokens: int | None = Field(
        None, description="The attempt's usage (from the usage ledger once it ended)"
    )
    completion_tokens: int | None = None
    cost: float | None = Field(None, description="USD; none before the attempt ended")
    estimated: bool | None = Field(
        None, description="Its tokens are estimated: the provider reported none"
    )


class JobUsage(BaseModel):
    """What the job's attempts spent, from the usage ledger."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: float = Field(description="USD, by the model's prices when each attempt ended")
    estimated: bool = Field(description="Some of the tokens are estimated")
    priced: bool = Field(description="Every attempt's model had prices (else its cost is 0)")


class JobDetail(JobOut):
    generation_inputs: dict[str, Any] | None
    input_message: MessageOut | None
    output_message: MessageOut | None
    attempts: list[AttemptOut]
    provider_job: ProviderJobOut | None
    usage: JobUsage | None = Field(description="None until an attempt has ended")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: int | None = Field(None, description="Pass it as `cursor` for the next page")


class BulkIn(BaseModel):
    ids: list[int] | None = Field(None, max_length=BULK_LIMIT)
    filter: JobFilter | None = None
    dry_run: bool = Field(False, description="Only count the jobs it would act on")

    @model_validator(mode="after")
    def one_selection(self) -> BulkIn:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either `ids` or `filter`")
        return self


class Refusal(BaseModel):
    id: int
    reason: str


class BulkOut(BaseModel):
    matched: int
    done: int
    refused: list[Refusal]


def job_out(job) -> JobOut:
    started = job.started_at or None
    return JobOut(
        id=job.id,
        name=job.name or "",
        state=job.state,
        thread_id=job.thread_id.id,
        provider_id=job.provider_id.id,
        provider_name=job.provider_id.sudo().name,
        model_id=job.model_id.id or None,
        user_id=job.user_id.id or None,
        priority=job.priority,
        retry_count=job.retry_count,
        max_retries=job.max_retries,
        error_message=job.error_message or None,
        error_kind=job.error_kind or None,
        next_retry_at=job.next_retry_at or None,
        created_at=job.create_date,
        queued_at=job.queued_at or None,
        started_at=started,
        completed_at=job.completed_at or None,
        queue_seconds=job.queue_duration if started else None,
        duration_seconds=job.duration if job.completed_at else None,
        can_cancel=job.can_cancel,
        can_retry=job.can_retry,
        execution_mode=job.execution_mode or "stream",
        waiting_reason=job.waiting_reason or None,
        eligible_at=job.eligible_at or None,
    )


def _attempt_out(attempt, reply, spent) -> AttemptOut:
    """An attempt, its tokens and cost from its ledger row ``spent`` (written when it ended);
    without one, the tokens its reply reports if it completed."""
    completed = attempt.outcome == "completed" and reply
    if spent:
        tokens = (spent.prompt_tokens, spent.completion_tokens)
    else:
        tokens = (reply.prompt_tokens, reply.completion_tokens) if completed else (None, None)
    return AttemptOut(
        number=attempt.number,
        worker=attempt.worker or None,
        started_at=attempt.started_at,
        first_token_at=attempt.first_token_at or None,
        ended_at=attempt.ended_at or None,
        outcome=attempt.outcome,
        error_message=attempt.error_message or None,
        duration_seconds=attempt.duration if attempt.ended_at else None,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        cost=spent.cost if spent else None,
        estimated=spent.estimated if spent else None,
    )


def _job_usage(rows) -> JobUsage | None:
    if not rows:
        return None
    return JobUsage(
        prompt_tokens=sum(rows.mapped("prompt_tokens")),
        completion_tokens=sum(rows.mapped("completion_tokens")),
        cached_tokens=sum(rows.mapped("cached_tokens")),
        cost=sum(rows.mapped("cost")),
        estimated=any(rows.mapped("estimated")),
        priced=all(rows.mapped("priced")),
    )


def job_detail(job) -> JobDetail:
    reply = job.output_message_id
    # As the superuser: the job was found visible; its ledger rows are its owner's.
    ledger = job.env["llm.generation.usage"].sudo().search([("job_id", "=", job.id)])
    spent = {row.attempt_id.id: row for row in ledger if row.attempt_id}
    return JobDetail(
        **job_out(job).model_dump(),
        generation_inputs=job.generation_inputs or None,
        input_message=message_out(job.input_message_id) if job.input_message_id else None,
        output_message=message_out(reply) if reply else None,
        attempts=[
            _attempt_out(attempt, reply, spent.get(attempt.id)) for attempt in job.attempt_ids
        ],
        provider_job=ProviderJobOut(**found) if (found := job._provider_job()) else None,
        usage=_job_usage(ledger),
    )


@router.get("")
def list_jobs(
    user: CurrentUser,
    filters: Annotated[JobFilter, Query()],
    cursor: int | None = Query(None, ge=1, description="`next_cursor` of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> JobPage:
    domain = filters.domain()
    if cursor is not None:
        domain.append(("id", "<", cursor))
    with user.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].search(domain, order="id desc", limit=limit)
        items = [job_out(job) for job in jobs]
    next_cursor = items[-1].id if len(items) == limit else None
    return JobPage(items=items, next_cursor=next_cursor)


@router.get("/{job_id}")
def read_job(job_id: int, user: CurrentUser) -> JobDetail:
    with user.environment(readonly=True) as env:
        return job_detail(visible_record(env, "llm.generation.job", job_id, "Generation job"))


# Before the routes of one job: "/bulk/cancel" is not job "bulk"'s "cancel".
@router.post("/bulk/{action}")
def bulk_action(action: Literal["cancel", "retry"], body: BulkIn, user: CurrentUser) -> BulkOut:
    """Cancel or retry many jobs: those of ``ids`` (that the user may see), or all that match
    ``filter`` (at most 10,000 per call)."""
    domain = [("id", "in", body.ids)] if body.ids is not None else body.filter.domain()
    with user.environment() as env:
        jobs = env["llm.generation.job"].search(domain, order="id", limit=BULK_LIMIT)
        if body.dry_run:
            return BulkOut(matched=len(jobs), done=0, refused=[])
        refused = []
        for job in jobs:
            try:
                with env.cr.savepoint():
                    getattr(job, f"action_{action}")()
            except UserError as error:
                refused.append(Refusal(id=job.id, reason=error.message))
        return BulkOut(matched=len(jobs), done=len(jobs) - len(refused), refused=refused)


def _act(user, job_id: int, action: str) -> JobDetail:
    with user.environment() as env:
        job = visible_record(env, "llm.generation.job", job_id, "Generation job")
        try:
            getattr(job, f"action_{action}")()
        except UserError as error:
            if type(error) is not UserError:
                raise
            raise conflict(error.message) from None
        return job_detail(job)


@router.post("/{job_id}/cancel", responses=CONFLICT)
def cancel_job(job_id: int, user: CurrentUser) -> JobDetail:
    """Cancel a queued or running job, or one waiting for its automatic retry."""
    return _act(user, job_id, "cancel")


@router.post("/{job_id}/retry", responses=CONFLICT)
def retry_job(job_id: int, user: CurrentUser) -> JobDetail:
    """Queue a failed job again, if it has retries left."""
    return _act(user, job_id, "retry")
