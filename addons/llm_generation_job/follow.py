"""Following a queued job from the caller's side: the worker's committed progress turned into
the update dicts of direct generation (llm_thread's ``updates`` module), preceded by job
status updates::

    {'type': 'job_status', 'job_id': 7, 'state': 'queued', 'position': 2, 'workers': 1,
     'message': 'Queued (position 2)'}
    {'type': 'job_status', 'job_id': 7, 'state': 'running', 'message': 'Generating...'}
    ... then the reply's message_create / message_chunk / message_update / done, or error.

While the job waits in a queue that no live worker serves, its status says so (``workers``
is 0, the message names the command that starts one) and the follower keeps following: the
job starts as soon as a worker does.

Each look at the job is its own short read-only transaction, so the generator always sees
what the worker committed and never holds a lock while it waits. It waits for the worker's
progress signal (NOTIFY on PostgreSQL, an in-process signal on SQLite), re-checking every
``poll_interval`` in case a signal cannot reach it (another process on SQLite).

A consumer that stops iterating only stops watching: the job goes on and its reply lands in
the thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from addons.llm_thread import updates
from core.notify import notifier_for

from .signals import CHANNELS, PROGRESS

if TYPE_CHECKING:
    from core.registry import Registry

POLL_INTERVAL = {"postgresql": 1.0, "sqlite": 0.2}
STATUS_TEXT = {"running": "Generating the reply...", "queued": "Queued (position {position})"}
NO_WORKER_TEXT = (
    "Queued (position {position}); no worker is running for this queue: start "
    "one with `llmjobs worker`"
)


def follow_job(env, job_id: int) -> Iterator[dict[str, Any]]:
    registry = env.registry
    notifier = notifier_for(registry)
    notifier.listen(*CHANNELS)
    poll = POLL_INTERVAL.get(registry.dialect, 1.0)
    last_status: tuple | None = None
    sent = ""
    announced = False
    while True:
        since = notifier.generation(PROGRESS, job_id)
        with registry.environment(user=env.uid, su=env.su, readonly=True) as watch:
            job = watch["llm.generation.job"].browse(job_id)
            state = job.state
            position = job._queue_position() if state == "queued" else None
            workers = (
                watch["llm.generation.worker"].live_count(job.provider_id.id)
                if state == "queued"
                else None
            )
            message = job.output_message_id
            message_data = updates.message_payload(message) if message else None
            body = message.body or "" if message else ""
            error = job.error_message or ""
            retry_at = job.next_retry_at
        status = (state, position, bool(workers))
        if status != last_status and state in ("queued", "running"):
            text = NO_WORKER_TEXT if state == "queued" and not workers else STATUS_TEXT[state]
            update = {
                "type": "job_status",
                "job_id": job_id,
                "state": state,
                "position": position,
                "message": text.format(position=position),
            }
            if state == "queued":
                update["workers"] = workers
            yield update
            last_status = status
        if message_data and not announced:
            yield updates.message_create(message_data)
            announced = True
        if body.startswith(sent) and len(body) > len(sent):
            yield updates.message_chunk(message_data, body[len(sent) :])
            sent = body
        elif not body.startswith(sent):  # a new attempt restarted the reply
            sent = body
            yield updates.message_update(message_data)
        if state == "completed":
            yield updates.message_update(message_data)
            yield updates.done(message_data, job_id=job_id)
            return
        if state == "failed":
            if message_data:
                yield updates.message_update(message_data)
            yield updates.error(
                error or "The generation failed.",
                job_id=job_id,
                retry_at=retry_at.isoformat() if retry_at else None,
            )
            return
        if state == "cancelled":
            if message_data:
                yield updates.message_update(message_data)
            yield {"type": "cancelled", "job_id": job_id, "message": error or "Cancelled."}
            return
        notifier.wait(PROGRESS, job_id, since, poll)


def wait_finished(
    registry: Registry,
    job_ids: list[int],
    *,
    timeout: float,
    poll: float = 0.2,
    on_poll: Callable[[list[str]], None] | None = None,
) -> None:
    """Wait until none of the jobs is queued or running (TimeoutError after ``timeout``
    seconds); ``on_poll(states)`` sees the jobs' states at each look."""
    from .store import ACTIVE_STATES

    deadline = time.monotonic() + timeout
    while True:
        with registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"]
            unfinished = jobs.search_count([("id", "in", job_ids), ("state", "in", ACTIVE_STATES)])
            if on_poll is not None:
                on_poll(jobs.browse(job_ids).mapped("state"))
        if not unfinished:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{unfinished} job(s) still unfinished after {timeout} s")
        time.sleep(poll)
