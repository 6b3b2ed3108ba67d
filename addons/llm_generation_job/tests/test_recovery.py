"""Jobs taken back from dead workers keep their place in line; a scheduled retry can be
cancelled and keeps its thread busy."""

import datetime as dt

import pytest

from addons.llm_generation_job.store import JobStore
from core import UserError


def queued_jobs(env, thread, count):
    jobs = env["llm.generation.job"].create(
        [{"thread_id": thread.id, "generation_inputs": {"prompt": f"q{n}"}} for n in range(count)]
    )
    for job in jobs:
        job.action_queue()
    return jobs


def expire(job):
    """As if the job's worker had stopped renewing its lease a while ago."""
    job.write_where([], {"lease_expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)})


def test_a_job_taken_back_from_a_dead_worker_keeps_its_place_in_line(env, thread):
    """Defect 5: requeue_expired set queued_at = now, sending the job behind the backlog."""
    first, second, third = queued_jobs(env, thread, 3)
    enqueued_at = first.queued_at
    store = JobStore(env)
    [lease] = store.claim(thread.provider_id.id, "dead-worker", limit=1)
    assert lease.job_id == first.id
    expire(first)
    assert store.requeue_expired() == 1
    assert (first.state, first.retry_count, first.queued_at) == ("queued", 1, enqueued_at)
    assert first._queue_position() == 1
    [again] = store.claim(thread.provider_id.id, "live-worker", limit=1)
    assert again.job_id == first.id  # ahead of the jobs queued after it
    assert first.attempt_ids.mapped("outcome") == ["lost", "running"]
    assert first.attempt_ids.mapped("number") == [1, 2]
    assert (second.state, third.state) == ("queued", "queued")


def test_a_handed_back_job_keeps_its_place_and_its_retries(env, thread):
    first, second = queued_jobs(env, thread, 2)
    store = JobStore(env)
    [lease] = store.claim(thread.provider_id.id, "stopping-worker", limit=1)
    assert store.release(lease, "The worker shut down during the attempt.")
    assert (first.state, first.retry_count) == ("queued", 0)
    assert first.attempt_ids.outcome == "interrupted"
    assert store.claim(thread.provider_id.id, "next", limit=1)[0].job_id == first.id
    assert second.state == "queued"
    assert not store.release(lease, "too late: the lease was taken over")


def test_an_expired_job_without_retries_fails_and_a_cancelled_one_is_cancelled(env, thread):
    doomed, cancelled = queued_jobs(env, thread, 2)
    doomed.write({"max_retries": 0})
    store = JobStore(env)
    store.claim(thread.provider_id.id, "dead-worker")
    cancelled.action_cancel()  # requested while its worker was already gone
    assert cancelled.state == "running" and cancelled.cancel_requested
    expire(doomed | cancelled)
    assert store.requeue_expired() == 2
    assert (doomed.state, doomed.error_kind) == ("failed", "retryable")
    assert "Gave up after 1 attempt." in doomed.error_message
    assert cancelled.state == "cancelled"
    assert (doomed | cancelled).mapped("attempt_ids.outcome") == ["lost", "lost"]


@pytest.fixture
def retry_pending(env, thread):
    """A job that failed retryably and waits for its automatic retry."""
    [job] = queued_jobs(env, thread, 1)
    store = JobStore(env)
    [lease] = store.claim(thread.provider_id.id, "worker")
    assert store.fail(lease, "HTTP 503 from the provider (retryable)", retryable=True)
    assert job.state == "failed" and job.next_retry_at and job.error_kind == "retryable"
    return job


def test_a_scheduled_retry_can_be_cancelled(env, thread, retry_pending):
    """Defect 6: action_cancel refused a failed job whose automatic retry was pending, so it
    came back later and posted into the thread."""
    job = retry_pending
    assert job.can_cancel
    job.action_cancel()
    assert (job.state, job.error_message) == ("cancelled", "Cancelled before its retry.")
    job.write_where([], {"next_retry_at": dt.datetime.now(dt.UTC)})  # its retry time comes
    assert JobStore(env).retry_due() == 0
    assert job.state == "cancelled"


def test_a_scheduled_retry_keeps_its_thread_busy(env, thread, retry_pending):
    with pytest.raises(UserError, match=f"job {retry_pending.id} is waiting for its retry"):
        next(thread.generate_response("another question", use_queue=True))
    with pytest.raises(UserError, match="already generating"):
        next(thread.generate_response("another question", use_queue=False))
    retry_pending.write_where([], {"next_retry_at": dt.datetime.now(dt.UTC)})
    assert JobStore(env).retry_due() == 1
    assert (retry_pending.state, retry_pending.retry_count) == ("queued", 1)


def test_a_retry_is_dropped_when_its_queue_stops_retrying(env, thread, retry_pending):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    queue.auto_retry_failed = False
    retry_pending.write_where([], {"next_retry_at": dt.datetime.now(dt.UTC)})
    assert JobStore(env).retry_due() == 0
    assert retry_pending.state == "failed" and not retry_pending.next_retry_at
    assert not JobStore(env).busy_job(thread.id)  # the thread is free again
