"""The chat pages: a user's own threads, a conversation, and its reply streaming in.

::

    GET  /web/threads                 the user's threads, and a form to start one
    POST /web/threads                 start a thread (model, name) -> its page
    GET  /web/threads/{id}            the conversation, the composer, the thread's jobs
                                      (?fragment=jobs: those only)
    POST /web/threads/{id}/send       post a message and generate the reply (queued or direct)
    POST /web/threads/{id}/stop       cancel the thread's generation job

With JavaScript the composer posts to ``POST /api/threads/{id}/generate`` instead and the
reply streams into the page as it is generated (``chat.js``); a reply still being generated
when the page opens is followed with ``GET /api/jobs/{id}/events``. Without it, ``send``
queues the job (or, direct, generates the whole reply) and comes back to the page, which shows
the reply when it is there.

Everything reads and writes as the page's user: the record rules show them their own threads
and jobs only (managers see everyone's).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from addons.llm_generation_job.controllers.jobs import job_out
from addons.llm_generation_job.store import JobStore
from addons.llm_thread.controllers.threads import message_out, thread_out
from core.exceptions import UserError, ValidationError
from core.http import PageUser, render, visible_record

from .common import form_refusal

router = APIRouter()
THREADS_SHOWN = 200
JOBS_SHOWN = 20


def _chat_models(env) -> list:
    return env["llm.model"].search([("model_use", "=", "chat")])


def _threads_page(request: Request, user: PageUser, refused: str | None = None) -> Response:
    with user.environment(readonly=True) as env:
        threads = env["llm.thread"].search([], limit=THREADS_SHOWN)
        context = {
            "threads": [thread_out(thread) for thread in threads],
            "models": [
                {"id": m.id, "label": f"{m.name} ({m.provider_id.sudo().name})"}
                for m in _chat_models(env)
            ],
        }
    return render(
        request,
        "llm_dashboard/threads.html",
        status_code=422 if refused else 200,
        refused=refused,
        **context,
    )


@router.get("/web/threads")
def threads_page(request: Request, user: PageUser) -> Response:
    return _threads_page(request, user)


@router.post("/web/threads")
def start_thread(
    request: Request,
    user: PageUser,
    model_id: int = Form(...),
    name: str = Form(""),
) -> Response:
    try:
        with user.environment() as env:
            model = env["llm.model"].search([("id", "=", model_id), ("model_use", "=", "chat")])
            if not model:
                raise ValidationError(f"There is no chat model {model_id}: pick one of the list.")
            thread = env["llm.thread"].create(
                {
                    "name": name.strip()[:256] or "New chat",
                    "provider_id": model.provider_id.id,
                    "model_id": model.id,
                }
            )
    except UserError as error:
        return _threads_page(request, user, form_refusal(error))
    return RedirectResponse(f"/web/threads/{thread.id}", status_code=303)


def _thread_page(
    request: Request,
    user: PageUser,
    thread_id: int,
    refused: str | None = None,
    status_code: int = 409,
    fragment: str | None = None,
) -> Response:
    with user.environment(readonly=True) as env:
        thread = visible_record(env, "llm.thread", thread_id, "Thread")
        messages = env["llm.message"].search([("thread_id", "=", thread.id)], order="id")
        jobs = env["llm.generation.job"].search(
            [("thread_id", "=", thread.id)], order="id desc", limit=JOBS_SHOWN
        )
        busy = JobStore(env).busy_job(thread.id)
        context = {
            "thread": thread_out(thread),
            "model_name": thread.model_id.name or "",
            "provider_name": thread.provider_id.sudo().name,
            "messages": [message_out(message) for message in messages],
            "jobs": [job_out(job) for job in jobs],
            "busy_job_id": busy.id if busy else None,
        }
    if fragment == "jobs":
        return render(request, "llm_dashboard/_thread_jobs.html", **context)
    return render(
        request,
        "llm_dashboard/thread.html",
        status_code=status_code if refused else 200,
        refused=refused,
        **context,
    )


@router.get("/web/threads/{thread_id}")
def thread_page(
    request: Request, user: PageUser, thread_id: int, fragment: Literal["jobs"] | None = None
) -> Response:
    """The conversation; ``?fragment=jobs``: the thread's jobs only (the live page fetches
    them again when a reply ends)."""
    return _thread_page(request, user, thread_id, fragment=fragment)


@router.post("/web/threads/{thread_id}/send")
def send_message(
    request: Request,
    user: PageUser,
    thread_id: int,
    content: str = Form(..., min_length=1, max_length=1_000_000),
    mode: Literal["queue", "direct"] = Form("queue"),
) -> Response:
    """Without JavaScript: queue the reply (the page shows it once a worker wrote it), or
    generate it whole before answering (direct)."""
    failure = None
    try:
        with user.environment() as env:
            thread = visible_record(env, "llm.thread", thread_id, "Thread")
            updates = thread.generate_response(content, use_queue=mode == "queue")
            try:
                for update in updates:
                    if update["type"] == "job_status":
                        break  # queued and committed: the worker takes it from here
                    if update["type"] == "error":
                        failure = update["error"]  # the reply keeps it, marked failed
            finally:
                updates.close()
    except UserError as error:
        return _thread_page(request, user, thread_id, form_refusal(error))
    if failure:
        return _thread_page(request, user, thread_id, failure, status_code=502)
    return RedirectResponse(f"/web/threads/{thread_id}", status_code=303)


@router.post("/web/threads/{thread_id}/stop")
def stop_generation(request: Request, user: PageUser, thread_id: int) -> Response:
    try:
        with user.environment() as env:
            thread = visible_record(env, "llm.thread", thread_id, "Thread")
            busy = JobStore(env).busy_job(thread.id)
            if busy:
                env["llm.generation.job"].browse(busy.id).action_cancel()
    except UserError as error:
        return _thread_page(request, user, thread_id, form_refusal(error))
    return RedirectResponse(f"/web/threads/{thread_id}", status_code=303)
