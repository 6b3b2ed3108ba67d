"""One job's page: its inputs, state and error, what it cost, the attempt timeline (each
attempt's tokens and cost), the reply (streaming live while the job runs), and retry and
cancel.

::

    GET  /web/jobs/{id}                    ?fragment=status: the state, error, actions and
                                           timeline only (the live page fetches it again)
    POST /web/jobs/{id}/retry|cancel

The reply shown is what the job's stream log holds so far (after its last restart) while the
job runs, its message once it ended; the page's script follows ``GET /api/jobs/{id}/events``
after the last piece shown (``data-after``) and appends what comes.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from addons.llm_generation_job.controllers.jobs import AttemptOut, JobDetail, job_detail
from addons.llm_generation_job.controllers.usage import format_cost
from core.exceptions import UserError
from core.http import PageUser, render, visible_record

from .common import JOB, form_refusal

router = APIRouter()


def _streamed_so_far(env, job_id: int) -> tuple[str, int]:
    """The reply in the job's stream log after its last restart, and the log's last seq."""
    pieces = env["llm.generation.job.chunk"].search([("job_id", "=", job_id)], order="seq")
    text: list[str] = []
    last = 0
    for piece in pieces.read(["seq", "kind", "content"]):
        last = piece["seq"]
        if piece["kind"] == "restart":
            text = []
        else:
            text.append(piece["content"] or "")
    return "".join(text), last


def attempt_figures(attempt: AttemptOut) -> dict:
    """An attempt's time to first token and its tokens per second after it (None when
    unknown)."""
    ttft = tokens_per_second = None
    if attempt.first_token_at:
        ttft = (attempt.first_token_at - attempt.started_at).total_seconds()
        if attempt.ended_at and attempt.completion_tokens:
            streaming = (attempt.ended_at - attempt.first_token_at).total_seconds()
            if streaming > 0:
                tokens_per_second = attempt.completion_tokens / streaming
    return {"ttft_seconds": ttft, "tokens_per_second": tokens_per_second}


def _page_context(env, job_id: int) -> dict:
    job = visible_record(env, JOB, job_id, "Generation job")
    detail: JobDetail = job_detail(job)
    reply_body = detail.output_message.body if detail.output_message else ""
    live = detail.can_cancel  # queued, running, or waiting for its automatic retry
    streamed, last_seq = _streamed_so_far(env, job.id)
    return {
        "job": detail,
        "live": live,
        "retry_pending": detail.state == "failed" and detail.can_cancel,
        "reply": streamed if live or not reply_body else reply_body,
        "last_seq": last_seq,
        "owner": job.user_id.name,
        "model_name": job.model_id.name or "",
        "thread_name": job.thread_id.name,
        "attempts": [(attempt, attempt_figures(attempt)) for attempt in detail.attempts],
        "cost": format_cost,
    }


def _job_page(
    request: Request, user: PageUser, job_id: int, fragment: str | None, refused: str | None
) -> Response:
    with user.environment(readonly=True) as env:
        context = _page_context(env, job_id)
    if fragment == "status":
        return render(request, "llm_dashboard/_job_status.html", refused=refused, **context)
    return render(
        request,
        "llm_dashboard/job.html",
        status_code=409 if refused else 200,
        refused=refused,
        **context,
    )


@router.get("/web/jobs/{job_id}")
def job_page(
    request: Request, user: PageUser, job_id: int, fragment: Literal["status"] | None = None
) -> Response:
    return _job_page(request, user, job_id, fragment, None)


@router.post("/web/jobs/{job_id}/{action}")
def job_action(
    request: Request, user: PageUser, job_id: int, action: Literal["retry", "cancel"]
) -> Response:
    """Retry or cancel the job; back to its page (which says why, when it was refused)."""
    try:
        with user.environment() as env:
            job = visible_record(env, JOB, job_id, "Generation job")
            getattr(job, f"action_{action}")()
    except UserError as error:
        return _job_page(request, user, job_id, None, form_refusal(error))
    return RedirectResponse(f"/web/jobs/{job_id}", status_code=303)
