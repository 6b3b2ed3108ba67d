"""The job state machine: allowed transitions, refused ones, timestamps and flags."""

import datetime as dt

import pytest

from addons.llm_generation_job.store import JobStore
from core import UserError


def start(job):
    """Put a queued job in the running state, as a worker's claim does (without running it)."""
    return JobStore(job.env).start(job, worker="test")


@pytest.fixture
def job(env, thread):
    return env["llm.generation.job"].create(
        {"thread_id": thread.id, "generation_inputs": {"prompt": "Hello world"}}
    )


def test_new_job_takes_provider_and_model_from_its_thread(job, thread):
    assert job.state == "draft"
    assert job.provider_id == thread.provider_id and job.model_id == thread.model_id
    assert job.user_id.id == job.env.uid and job.max_retries == 3
    assert job.name == "Chat - sim-model"


def test_queue_then_cancel(job):
    job.action_queue()
    assert job.state == "queued" and job.queued_at and job.is_active and job.can_cancel
    job.action_cancel()
    assert job.state == "cancelled" and job.completed_at and not job.is_active
    assert not job.can_cancel and not job.can_retry


def test_start_complete_and_durations(job):
    job.action_queue()
    lease = start(job)
    assert job.state == "running" and job.lease_token == lease.token
    assert job.attempt_ids.mapped("outcome") == ["running"]
    job.write_where([], {"queued_at": job.started_at - dt.timedelta(seconds=2)})
    job.action_complete()
    assert job.state == "completed"
    assert job.queue_duration == pytest.approx(2.0)
    assert job.duration > 0 and job.attempt_ids.outcome == "completed"


def test_fail_then_retry_until_the_limit(job):
    job.write({"max_retries": 1})
    job.action_queue()
    start(job)
    job.action_fail("boom")
    assert (job.state, job.error_message, job.error_kind) == ("failed", "boom", "permanent")
    assert job.can_retry
    job.action_retry()
    assert (job.state, job.retry_count, job.error_message) == ("queued", 1, False)
    start(job)
    job.action_fail("boom again")
    assert not job.can_retry
    with pytest.raises(UserError, match="used its 1 retries"):
        job.action_retry()


@pytest.mark.parametrize(
    ("prepare", "action", "message"),
    [
        ((), "action_start", "Cannot start generation job .*: it is draft"),
        (("action_queue", "action_cancel"), "action_start", "it is cancelled"),
        (("action_queue",), "action_queue", "Cannot queue .*: it is queued"),
        (("action_queue", "action_cancel"), "action_queue", "it is cancelled"),
        (("action_queue", "action_cancel"), "action_retry", "it is cancelled"),
        (("action_queue",), "action_complete", "only running jobs can be completed"),
        ((), "action_cancel", "only queued or running jobs, or failed ones waiting"),
        ((), "action_fail", "it is draft"),
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(job, prepare, action, message):
    for step in prepare:
        getattr(job, step)()
    before = job.read(["state", "queued_at", "completed_at", "retry_count"])
    with pytest.raises(UserError, match=message):
        getattr(job, action)()
    job.env.invalidate_all()
    assert job.read(["state", "queued_at", "completed_at", "retry_count"]) == before


def test_retry_of_a_completed_job_is_refused(job):
    job.action_queue()
    start(job)
    job.action_complete()
    with pytest.raises(UserError, match="it is completed"):
        job.action_retry()


def test_cleanup_removes_old_finished_jobs_only(env, thread):
    jobs = env["llm.generation.job"].create([{"thread_id": thread.id} for _ in range(4)])
    for job in jobs[:3]:
        job.action_queue()
    jobs[0].action_cancel()
    jobs[1].action_cancel()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    (jobs[0] | jobs[2]).write({"create_date": old})
    assert env["llm.generation.job"].cleanup_old_jobs(days=7) == 1
    assert not jobs[0].exists() and jobs[1].exists() and jobs[2].exists()


def test_queue_position_follows_priority_then_fifo(env, thread):
    jobs = env["llm.generation.job"].create(
        [{"thread_id": thread.id, "priority": p} for p in (0, 0, 5)]
    )
    for job in jobs:
        job.action_queue()
    assert [j._queue_position() for j in jobs] == [2, 3, 1]
