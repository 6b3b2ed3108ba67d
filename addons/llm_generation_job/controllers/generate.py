"""Generating a reply over HTTP, as Server-Sent Events, and following a job again later.

::

    POST /api/threads/{id}/generate   {"content"?, "use_queue"?, "options"?, "execution_mode"?}
    GET  /api/jobs/{id}/events        the job's events; resumes after ``Last-Event-ID``
    POST /api/threads/{id}/stop       cancel the thread's generation job

Each event is one update of ``thread.generate_response`` (shapes in llm_thread's
``updates.py`` and this addon's ``follow.py``): ``event:`` is its type, ``data:`` the update as
JSON. In queued mode every piece of the reply is an event whose ``id`` is its place in the
job's stream log (``seq``), and so is a ``restart`` (a new attempt starts the reply over). A
client that lost the stream reconnects to ``GET /api/jobs/{job_id}/events`` with the last id
it saw as ``Last-Event-ID`` (or ``?after=``) and gets exactly the rest, from the log, whichever
worker wrote it and whether or not the one it was watching died meanwhile; it ends with the
job (``done``, ``error`` or ``cancelled``).

A client that disconnects from a queued generation only stops watching: the job goes on and
its reply lands in the thread. A direct generation (``use_queue: false``) streams from this
process and has no log to resume from: disconnecting cancels it, leaving the partial reply
marked cancelled. ``POST .../stop`` cancels the thread's queued or running job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from core.exceptions import AccessError, MissingError, UserError, ValidationError
from core.http import (
    CONFLICT,
    CurrentUser,
    Principal,
    conflict,
    event_stream,
    not_found,
    visible_record,
)

from ..follow import follow_job
from ..store import JobStore

router = APIRouter(prefix="/api", tags=["generation"])
EVENTS = {200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}}


class GenerateIn(BaseModel):
    content: str | None = Field(
        None, max_length=1_000_000, description="A user message to post first (optional)"
    )
    use_queue: bool | None = Field(
        None,
        description="true: a worker generates the reply as a job; false: this server streams "
        "it directly; null: queued when the provider's queue has a live worker",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra request fields, e.g. temperature, max_tokens"
    )
    execution_mode: Literal["stream", "batch", "background"] | None = Field(
        None,
        description="How the job's reply is generated (queued): streamed by a worker, in a "
        "provider batch (half the price, within 24 hours), or as a background response; "
        "null: as its queue says",
    )


class StopOut(BaseModel):
    job_id: int
    state: str


def event_id(update: dict[str, Any]) -> str | None:
    seq = update.get("seq")
    return str(seq) if seq is not None else None


def _started(updates: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``updates`` with its first update taken now, so that a refusal (the thread is busy,
    an invalid option) is an HTTP error rather than an event."""
    try:
        first = next(updates)
    except StopIteration:
        return iter(())
    except (ValidationError, AccessError, MissingError):
        updates.close()
        raise
    except UserError as error:
        updates.close()
        raise conflict(error.message) from None

    def chained() -> Iterator[dict[str, Any]]:
        try:
            yield first
            yield from updates
        finally:
            updates.close()

    return chained()


def _generation(user: Principal, thread_id: int, body: GenerateIn) -> Iterator[dict[str, Any]]:
    with user.environment() as env:
        thread = visible_record(env, "llm.thread", thread_id, "Thread")
        yield from thread.generate_response(
            body.content,
            use_queue=body.use_queue,
            execution_mode=body.execution_mode,
            **body.options,
        )


@router.post("/threads/{thread_id}/generate", responses={**EVENTS, **CONFLICT})
def generate(thread_id: int, body: GenerateIn, user: CurrentUser):
    """Generate the thread's next reply, streamed as Server-Sent Events (409 while the
    thread is already generating)."""
    return event_stream(_started(_generation(user, thread_id, body)), event_id)


def _follow(user: Principal, job_id: int, after: int) -> Iterator[dict[str, Any]]:
    with user.environment(readonly=True) as env:
        visible_record(env, "llm.generation.job", job_id, "Generation job")
    # The follower reads in short transactions of its own: none stays open while it waits.
    yield from follow_job(env, job_id, after_seq=after)


@router.get("/jobs/{job_id}/events", responses=EVENTS)
def job_events(
    job_id: int,
    user: CurrentUser,
    after: int | None = Query(None, ge=0, description="Resume after this event id"),
    last_event_id: str | None = Header(None, description="Resume after this event id"),
):
    """Follow a job as Server-Sent Events until it ends; resume after ``Last-Event-ID``."""
    if after is None and last_event_id:
        try:
            after = int(last_event_id)
        except ValueError:
            raise ValidationError(
                f"Last-Event-ID must be the id of an event of this stream (a number), "
                f"got {last_event_id!r}."
            ) from None
    return event_stream(_started(_follow(user, job_id, after or 0)), event_id)


@router.post("/threads/{thread_id}/stop", responses=CONFLICT)
def stop(thread_id: int, user: CurrentUser) -> StopOut:
    """Cancel the thread's queued or running job (or the retry it waits for)."""
    with user.environment() as env:
        thread = visible_record(env, "llm.thread", thread_id, "Thread")
        busy = JobStore(env).busy_job(thread.id)
        if not busy:
            raise not_found(f"A generation job of thread {thread_id}")
        job = env["llm.generation.job"].browse(busy.id)
        try:
            job.action_cancel()
        except UserError as error:
            raise conflict(error.message) from None
        return StopOut(job_id=job.id, state=job.state)
