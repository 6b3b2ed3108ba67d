"""Claiming queued jobs for a worker, and taking back the jobs of dead workers.

Claim, in one short transaction (the caller's; it commits)::

    lock the provider's queue row          SELECT ... FOR UPDATE   (SQLite: BEGIN IMMEDIATE
                                                                     already serialises)
    free = max_concurrent_jobs - running jobs of the provider
    pick up to `free` queued jobs          ORDER BY priority DESC, queued_at, id
                                           FOR UPDATE SKIP LOCKED
    each: state=running, a new lease token and expiry, a new attempt row

Locking the queue row makes "count running, then start more" atomic across every worker on
every machine, so ``max_concurrent_jobs`` is never exceeded; SKIP LOCKED keeps claimers off
rows someone else (e.g. a cancel) is changing.

A lease expires when its worker stops renewing it (killed, frozen, cut off). The status cron
and every worker's loop call ``requeue_expired``: the attempt is recorded as lost and the job
goes back to the queue as a new attempt, or fails when it has no retries left. The update is
conditional on the old token, so only one caller wins.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

import sqlalchemy as sa

from core import Environment

from .notify import PROGRESS, QUEUED, notifier_for

LEASE_SECONDS = float(os.environ.get("LLMJOBS_JOB_LEASE_SECONDS", "30"))


@dataclass(frozen=True)
class Lease:
    """The right of one worker to run one attempt of a job."""

    job_id: int
    token: str
    attempt_id: int


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def claim_jobs(env: Environment, provider_id: int, worker: str, limit: int | None = None,
               job_id: int | None = None) -> list[Lease]:
    """Start as many queued jobs of the provider as its queue allows (at most ``limit``; only
    ``job_id`` when given). The caller commits."""
    cr = env.cr
    queues = env["llm.generation.queue"]
    jobs = env["llm.generation.job"]
    queue_table, job_table = queues._table_obj, jobs._table_obj
    queue = cr.execute(
        sa.select(queue_table.c.id, queue_table.c.enabled, queue_table.c.max_concurrent_jobs)
        .where(queue_table.c.provider_id == provider_id)
        .with_for_update()
    ).first()
    if queue is None or not queue.enabled:
        return []
    running = cr.execute(
        sa.select(sa.func.count()).select_from(job_table).where(
            job_table.c.provider_id == provider_id, job_table.c.state == "running")
    ).scalar_one()
    free = (queue.max_concurrent_jobs or 0) - running
    if limit is not None:
        free = min(free, limit)
    if free <= 0:
        return []
    query = (
        sa.select(job_table.c.id, job_table.c.retry_count)
        .where(job_table.c.provider_id == provider_id, job_table.c.state == "queued")
        .order_by(job_table.c.priority.desc(), job_table.c.queued_at, job_table.c.id)
        .limit(free)
        .with_for_update(skip_locked=True)
    )
    if job_id is not None:
        query = query.where(job_table.c.id == job_id)
    picked = cr.execute(query).all()
    if not picked:
        return []
    now = _now()
    expires = now + dt.timedelta(seconds=LEASE_SECONDS)
    tokens = {row.id: jobs._new_lease_token() for row in picked}
    cr.execute(
        sa.update(job_table)
        .where(job_table.c.id == sa.bindparam("job_id"), job_table.c.state == "queued")
        .values(state="running", started_at=now, completed_at=None,
                lease_token=sa.bindparam("token"), lease_expires_at=expires,
                cancel_requested=False, write_date=now),
        [{"job_id": id_, "token": token} for id_, token in tokens.items()],
    )
    attempts = env["llm.generation.job.attempt"].create([
        {"job_id": row.id, "number": row.retry_count + 1, "worker": worker, "started_at": now}
        for row in picked
    ])
    cr.execute(sa.update(queue_table).where(queue_table.c.id == queue.id)
               .values(last_processed_at=now))
    notifier = notifier_for(env.registry)
    for id_ in tokens:
        notifier.send(cr, PROGRESS, id_)
    env.cache.clear()
    # Stored computed fields (durations) follow what the SQL above wrote.
    env.registry.triggers.after_change(jobs.browse(list(tokens)), {"state", "started_at"})
    return [
        Lease(row.id, tokens[row.id], attempt.id)
        for row, attempt in zip(picked, attempts, strict=True)
    ]


def claim_job(env: Environment, job, worker: str) -> Lease | None:
    leases = claim_jobs(env, job.provider_id.id, worker, limit=1, job_id=job.id)
    return leases[0] if leases else None


def renew(env: Environment, lease: Lease) -> bool:
    """Extend the lease; False when it was lost or the job's cancellation was requested."""
    job = env["llm.generation.job"].browse(lease.job_id)
    return job._fenced_update(
        lease.token, {"lease_expires_at": _now() + dt.timedelta(seconds=LEASE_SECONDS)}
    )


def requeue_expired(env: Environment) -> int:
    """Take back running jobs whose lease expired: requeue them as a new attempt, or fail
    them when out of retries. Returns how many were taken back. The caller commits."""
    jobs = env["llm.generation.job"]
    table = jobs._table_obj
    now = _now()
    expired = env.cr.execute(
        sa.select(table.c.id, table.c.lease_token)
        .where(table.c.state == "running", table.c.lease_token.is_not(None),
               table.c.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    notifier = notifier_for(env.registry)
    for job_id, token in expired:
        job = jobs.browse(job_id)
        lost = "The worker stopped renewing its lease (it died, froze or lost the database)."
        job.attempt_ids.filtered(lambda a: a.outcome == "running").write(
            {"outcome": "lost", "ended_at": now, "error_message": lost})
        if job.cancel_requested:
            job._finish("cancelled", error="Cancelled while running (its worker was gone).")
        elif job.retry_count < job.max_retries:
            taken = job._fenced_update(token, {
                "state": "queued", "retry_count": job.retry_count + 1, "queued_at": now,
                "started_at": False, "lease_token": False, "lease_expires_at": False,
            }, allow_cancelled=True)
            if taken:
                notifier.send(env.cr, QUEUED, job.provider_id.id)
        else:
            job._finish("failed", error=f"{lost} No retries left.", error_kind="retryable")
    env.cache.clear()
    return len(expired)
