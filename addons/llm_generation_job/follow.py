"""Following a queued job from the caller's side: the worker's committed progress turned into
the update dicts of direct generation (llm_thread's ``updates`` module), preceded by job
status updates::

    {'type': 'job_status', 'job_id': 7, 'state': 'queued', 'position': 2, 'workers': 1,
     'message': 'Queued (position 2)'}
    {'type': 'job_status', 'job_id': 7, 'state': 'running', 'message': 'Generating...'}
    ... then the reply's message_create / message_chunk / message_update / done, or error.

While the job waits in a queue that no live worker serves, its status says so (``workers``
is 0, the message names the command that starts one) and the follower keeps following: the
job starts as soon as a worker does. A failed attempt with a retry to come is a status too::

    {'type': 'job_status', 'job_id': 7, 'state': 'retrying', 'retry_at': '2026-...',
     'message': "Provider 'p' failed: HTTP 503 ... Retrying at 10:42:07 UTC (attempt 2 of 4)."}

and the new attempt's reply follows (a ``message_update`` shows the reply starting over). A
failure retried before the follower looked (a retry due at once) is shown the same way, once
the new attempt is seen, with the moment it started as ``retry_at``. The follower ends with
the job: ``done``, ``cancelled``, or ``error`` once no retry is left. While
the database is unavailable it says so once, keeps looking, less often, and goes on when the
database is back.

Each look at the job is its own short read-only transaction, so the generator always sees
what the worker committed and never holds a lock while it waits. It waits for the worker's
progress signal (NOTIFY on PostgreSQL; on SQLite an in-process signal, or any commit to the
database when the worker is another process), re-checking every ``poll_interval`` in case a
signal is lost.

A consumer that stops iterating only stops watching: the job goes on and its reply lands in
the thread.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from addons.llm_thread import updates
from core import DatabaseUnavailable
from core.notify import notifier_for

from .signals import CHANNELS, PROGRESS

if TYPE_CHECKING:
    from core.registry import Registry

POLL_INTERVAL = {"postgresql": 1.0, "sqlite": 0.2}
OUTAGE_POLL_MAX = 5.0  # seconds between looks while the database is unavailable
STATUS_TEXT = {"running": "Generating the reply...", "queued": "Queued (position {position})"}
NO_WORKER_TEXT = (
    "Queued (position {position}); no worker is running for this queue: start "
    "one with `llmjobs worker`"
)


@dataclass(frozen=True)
class _Look:
    """What one look at the job saw."""

    state: str
    position: int | None
    workers: int | None
    message: dict[str, Any] | None
    error: str
    retry_at: dt.datetime | None
    chunks: list[dict[str, Any]]  # the stream log after the last seq seen
    attempts: int  # how many attempts the job has had
    # The latest failed attempt that was retried: its number, its error, and when the next
    # attempt started.
    retried: tuple[int, str, dt.datetime] | None
    retry_count: int

    @property
    def retry_pending(self) -> bool:
        return self.state == "failed" and self.retry_at is not None


def _look(env, job_id: int, after_seq: int, last: _Look | None = None) -> _Look:
    """What the job shows now. While it streams, a look reads the job and its new pieces
    only: its attempts and its message are as ``last`` saw them while the job ran then,
    since a retry moves its ``retry_count``, a new attempt logs a restart, and the message
    changes only when the job stops running."""
    job = env["llm.generation.job"].browse(job_id)
    state = job.state
    queued = state == "queued"
    message = job.output_message_id
    chunks = env["llm.generation.job.chunk"].search_read(
        [("job_id", "=", job_id), ("seq", ">", after_seq)],
        ["seq", "kind", "content", "attempt"],
        order="seq",
    )
    streaming = (
        last is not None
        and state == last.state == "running"
        and job.retry_count == last.retry_count
        and (message.id or None) == (last.message or {}).get("id")
        and not any(chunk["kind"] == "restart" for chunk in chunks)
    )
    if streaming:
        message_data, attempt_count, retried = last.message, last.attempts, last.retried
    else:
        message_data = updates.message_payload(message) if message else None
        attempts = job.attempt_ids
        failed = [i for i, attempt in enumerate(attempts[:-1]) if attempt.outcome == "failed"]
        attempt_count, retried = len(attempts), None
        if failed:
            attempt, following = attempts[failed[-1]], attempts[failed[-1] + 1]
            retried = (attempt.number, attempt.error_message or "", following.started_at)
    return _Look(
        state=state,
        position=job._queue_position() if queued else None,
        workers=env["llm.generation.worker"].live_count(job.provider_id.id) if queued else None,
        message=message_data,
        error=job.error_message or "",
        retry_at=(job.next_retry_at or None) if job.error_kind == "retryable" else None,
        chunks=chunks,
        attempts=attempt_count,
        retried=retried,
        retry_count=job.retry_count,
    )


def follow_job(env, job_id: int, after_seq: int = 0) -> Iterator[dict[str, Any]]:
    """The job's updates until it ends: completed, cancelled, or failed with no retry to
    come. A failure with a retry scheduled is a ``retrying`` status, and the new attempt's
    reply follows; while the database is unavailable, a status says so once and the
    follower keeps looking, less often. The reply's pieces come from the stream log, each
    with its ``seq``: a follower that comes back resumes after the last it saw
    (``after_seq``)."""
    registry = env.registry
    notifier = notifier_for(registry)
    notifier.listen(*CHANNELS)
    notifier.watch_commits(PROGRESS)  # SQLite: a worker in another process
    poll = POLL_INTERVAL.get(registry.dialect, 1.0)
    last_status: tuple | None = None
    first_attempt: int | None = None  # the job's attempt when following began
    retries_shown: set[int] = set()  # attempts whose failure was shown as a retry
    announced = False
    outage_delay: float | None = None
    look: _Look | None = None
    while True:
        since = notifier.generation(PROGRESS, job_id)
        try:
            with registry.environment(user=env.uid, su=env.su, readonly=True) as watch:
                look = _look(watch, job_id, after_seq, look)
        except DatabaseUnavailable as error:
            if outage_delay is None:
                state = last_status[0] if last_status else "unknown"
                note = (
                    f"The database is unavailable for the moment ({error.reason}); still "
                    "following the job."
                )
                yield {"type": "job_status", "job_id": job_id, "state": state, "message": note}
                last_status, outage_delay = None, poll
            time.sleep(outage_delay)
            outage_delay = min(outage_delay * 2, OUTAGE_POLL_MAX)
            continue
        outage_delay = None
        state, message_data = look.state, look.message
        if first_attempt is None:
            first_attempt = look.attempts
        if look.retry_pending:
            retries_shown.add(look.attempts)
        elif look.retried and look.retried[0] >= first_attempt:
            number, error, retried_at = look.retried
            if number not in retries_shown:  # retried before this follower saw it fail
                retries_shown.add(number)
                yield {
                    "type": "job_status",
                    "job_id": job_id,
                    "state": "retrying",
                    "retry_at": retried_at.isoformat(),
                    "message": error,
                }
        status = (state, look.position, bool(look.workers), look.retry_at)
        if status != last_status and (state in ("queued", "running") or look.retry_pending):
            yield _status_update(job_id, look)
            last_status = status
        if message_data and not announced:
            yield updates.message_create(message_data)
            announced = True
        for chunk in look.chunks:
            seq = chunk["seq"]
            if chunk["kind"] == "restart":  # a new attempt: the reply starts over
                attempt = chunk["attempt"]
                yield updates.restart(message_data, job_id=job_id, attempt=attempt, seq=seq)
            else:
                yield updates.message_chunk(message_data, chunk["content"] or "", seq=seq)
            after_seq = seq
        if state == "completed":
            yield updates.message_update(message_data)
            yield updates.done(message_data, job_id=job_id)
            return
        if state == "failed" and not look.retry_pending:
            if message_data:
                yield updates.message_update(message_data)
            yield updates.error(look.error or "The generation failed.", job_id=job_id)
            return
        if state == "cancelled":
            if message_data:
                yield updates.message_update(message_data)
            yield {"type": "cancelled", "job_id": job_id, "message": look.error or "Cancelled."}
            return
        notifier.wait(PROGRESS, job_id, since, poll)


def _status_update(job_id: int, look: _Look) -> dict[str, Any]:
    if look.retry_pending:
        return {
            "type": "job_status",
            "job_id": job_id,
            "state": "retrying",
            "retry_at": look.retry_at.isoformat(),
            "message": look.error,
        }
    text = NO_WORKER_TEXT if look.state == "queued" and not look.workers else None
    update = {
        "type": "job_status",
        "job_id": job_id,
        "state": look.state,
        "position": look.position,
        "message": (text or STATUS_TEXT[look.state]).format(position=look.position),
    }
    if look.state == "queued":
        update["workers"] = look.workers
    return update


def wait_finished(
    registry: Registry,
    job_ids: list[int],
    *,
    timeout: float,
    poll: float = 0.2,
    on_poll: Callable[[list[str]], None] | None = None,
) -> None:
    """Wait until none of the jobs is queued, running or waiting for its retry (TimeoutError
    after ``timeout`` seconds); ``on_poll(states)`` sees the jobs' states at each look."""
    from .store import BUSY

    deadline = time.monotonic() + timeout
    while True:
        with registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"]
            unfinished = jobs.search_count([("id", "in", job_ids), *BUSY])
            if on_poll is not None:
                on_poll(jobs.browse(job_ids).mapped("state"))
        if not unfinished:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{unfinished} job(s) still unfinished after {timeout} s")
        time.sleep(poll)
