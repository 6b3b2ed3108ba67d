"""The queues: each one's configuration and statistics for everyone; for LLM managers, a form
to change its limit and retry policy, and pause and resume.

::

    GET  /web/queues
    POST /web/queues/{id}                 (managers) limit, retry policy, attempt deadline,
                                          execution mode, provider batches
    POST /web/queues/{id}/pause|resume    (managers)

The form is checked by the API's own ``QueuePatch`` and written by ``queue.write`` as the
manager; what is refused is shown on the page, next to the queue's form.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from addons.llm_generation_job.controllers.queues import QueuePatch, queue_out
from core.exceptions import UserError
from core.http import PageUser, render, visible_record

from .common import ManagerPage, field_errors, form_refusal, without_blanks

router = APIRouter()
QUEUE = "llm.generation.queue"
LABELS = {
    "max_concurrent_jobs": "Limit",
    "retry_delay_minutes": "Retry delay",
    "attempt_deadline_seconds": "Attempt deadline",
    "auto_retry_failed": "Automatic retries",
    "execution_mode": "Replies",
    "batch_unattended": "Unattended jobs in batches",
    "batch_max_size": "Batch size",
    "batch_max_wait_seconds": "Batch wait",
    "batch_requeue_unfinished": "Stream again what a batch never ran",
    "rpm_limit": "Requests a minute",
    "tpm_limit": "Tokens a minute",
    "breaker_threshold": "Cool down after",
    "breaker_cooldown_seconds": "Cooldown",
    "fair_share": "Fair share",
    "adaptive_concurrency": "Adaptive concurrency",
    "min_concurrency": "Lowest concurrency",
}
REQUIRED = ("max_concurrent_jobs", "retry_delay_minutes", "attempt_deadline_seconds")


def _queues_page(
    request: Request,
    user,
    editing: int | None = None,
    values: dict | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    with user.environment(readonly=True) as env:
        queues = [queue_out(queue) for queue in env[QUEUE].search([])]
    return render(
        request,
        "llm_dashboard/queues.html",
        status_code=422 if errors else 200,
        queues=queues,
        editing=editing,
        values=values or {},
        errors=errors or {},
    )


@router.get("/web/queues")
def queues_page(request: Request, user: PageUser) -> Response:
    return _queues_page(request, user)


@router.post("/web/queues/{queue_id}")
def update_queue(
    request: Request,
    user: ManagerPage,
    queue_id: int,
    max_concurrent_jobs: Annotated[str, Form()] = "",
    retry_delay_minutes: Annotated[str, Form()] = "",
    attempt_deadline_seconds: Annotated[str, Form()] = "",
    auto_retry_failed: Annotated[bool, Form()] = False,
    execution_mode: Annotated[str, Form()] = "",
    batch_unattended: Annotated[bool, Form()] = False,
    batch_max_size: Annotated[str, Form()] = "",
    batch_max_wait_seconds: Annotated[str, Form()] = "",
    batch_requeue_unfinished: Annotated[bool, Form()] = False,
    rpm_limit: Annotated[str, Form()] = "",
    tpm_limit: Annotated[str, Form()] = "",
    breaker_threshold: Annotated[str, Form()] = "",
    breaker_cooldown_seconds: Annotated[str, Form()] = "",
    fair_share: Annotated[bool, Form()] = False,
    adaptive_concurrency: Annotated[bool, Form()] = False,
    min_concurrency: Annotated[str, Form()] = "",
) -> Response:
    """Save a queue's form (every field of it: an unticked box is "no"; a batch or limit
    setting left empty is kept)."""
    values = {
        "max_concurrent_jobs": max_concurrent_jobs,
        "retry_delay_minutes": retry_delay_minutes,
        "attempt_deadline_seconds": attempt_deadline_seconds,
        "auto_retry_failed": auto_retry_failed,
        "execution_mode": execution_mode,
        "batch_unattended": batch_unattended,
        "batch_max_size": batch_max_size,
        "batch_max_wait_seconds": batch_max_wait_seconds,
        "batch_requeue_unfinished": batch_requeue_unfinished,
        "rpm_limit": rpm_limit,
        "tpm_limit": tpm_limit,
        "breaker_threshold": breaker_threshold,
        "breaker_cooldown_seconds": breaker_cooldown_seconds,
        "fair_share": "user" if fair_share else "none",
        "adaptive_concurrency": adaptive_concurrency,
        "min_concurrency": min_concurrency,
    }
    missing = {name: f"{LABELS[name]}: enter a number." for name in REQUIRED if values[name] == ""}
    if missing:
        return _queues_page(request, user, queue_id, values, missing)
    try:
        patch = QueuePatch.model_validate(without_blanks(values))
    except pydantic.ValidationError as error:
        return _queues_page(request, user, queue_id, values, field_errors(error, LABELS))
    try:
        with user.environment() as env:
            queue = visible_record(env, QUEUE, queue_id, "Queue")
            queue.write(patch.model_dump(exclude_none=True))
    except UserError as error:
        return _queues_page(request, user, queue_id, values, {"form": form_refusal(error)})
    return RedirectResponse(f"/web/queues#queue-{queue_id}", status_code=303)


@router.post("/web/queues/{queue_id}/{action}")
def pause_or_resume(
    user: ManagerPage, queue_id: int, action: Literal["pause", "resume"]
) -> Response:
    with user.environment() as env:
        queue = visible_record(env, QUEUE, queue_id, "Queue")
        if action == "pause":
            queue.action_disable()
        else:
            queue.action_enable()
    return RedirectResponse(f"/web/queues#queue-{queue_id}", status_code=303)
