"""Real ``llmjobs worker`` processes, on SQLite and PostgreSQL: exactly-once replies, the
concurrency limit across workers, surviving a SIGKILL, failures and cancellation."""

from __future__ import annotations

import signal
import time

import pytest

from addons.llm_generation_job.follow import wait_finished

from .conftest import streaming

pytestmark = pytest.mark.slow

# Short, so that a killed worker's jobs come back quickly; not shorter: on SQLite four busy
# workers can keep one waiting for the write lock for a second or two (its busy handler is not
# fair), and a lease must outlast that or a live worker loses its jobs.
LEASE_SECONDS = 4


def setup_threads(registry, api_base, count, max_concurrent=6, retry_delay=0):
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "sim", "service": "openai", "api_base": api_base, "api_key": "sk"}
        )
        model = env["llm.model"].create(
            {"name": "sim", "provider_id": provider.id, "default": True}
        )
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        queue.write({"max_concurrent_jobs": max_concurrent, "retry_delay_minutes": retry_delay})
        return (
            env["llm.thread"]
            .create(
                [
                    {"name": f"t{i}", "provider_id": provider.id, "model_id": model.id}
                    for i in range(count)
                ]
            )
            .ids
        )


def queue_jobs(registry, thread_ids, per_thread=1, prompt="question"):
    with registry.environment() as env:
        jobs = env["llm.generation.job"].create(
            [
                {"thread_id": thread_id, "generation_inputs": {"prompt": f"{prompt} {n}"}}
                for thread_id in thread_ids
                for n in range(per_thread)
            ]
        )
        for job in jobs:
            job.action_queue()
        return jobs.ids


def assert_one_reply_per_job(registry, job_ids):
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        odd = jobs.filtered(lambda j: j.state != "completed")
        assert not odd, [
            (j.id, j.state, j.retry_count, j.error_message, j.attempt_ids.mapped("outcome"))
            for j in odd
        ]
        replies = env["llm.message"].search([("llm_role", "=", "assistant")])
        assert len(replies) == len(job_ids)
        assert sorted(jobs.mapped("output_message_id").ids) == sorted(replies.ids)
        assert set(replies.mapped("state")) == {"done"}
        return jobs


def test_four_workers_run_500_jobs_exactly_once_within_the_limit(
    registry, start_workers, openai_server
):
    thread_ids = setup_threads(registry, openai_server.url, 50, max_concurrent=6)
    openai_server.reset_stats()
    # Two slots each: eight in all against the queue's six, so the queue's limit binds across
    # workers, and no one worker can hold the queue's six (one with eight slots may well serve
    # every job alone: it claims a freed slot before the others hear of it).
    start_workers(4, concurrency=2, lease=LEASE_SECONDS)
    job_ids = queue_jobs(registry, thread_ids, per_thread=10)
    wait_finished(registry, job_ids, timeout=180)
    jobs = assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        attempts = env["llm.generation.job.attempt"].search([("job_id", "in", job_ids)])
        odd = attempts.filtered(lambda a: a.outcome != "completed")
        assert not odd, [(a.job_id.id, a.number, a.outcome, a.error_message) for a in odd]
        assert len(attempts) == 500
        assert len(set(attempts.mapped("worker"))) >= 3  # the work was shared
    stats = openai_server.wait_idle(timeout=10)
    assert stats["requests"] == 500
    assert 1 < stats["max_in_flight"] <= 6
    assert len(jobs) == 500


def test_sigkill_mid_job_loses_no_job_and_duplicates_no_reply(
    registry, start_workers, openai_server
):
    thread_ids = setup_threads(registry, openai_server.url, 6, max_concurrent=6)
    victim, _survivor = start_workers(2, concurrency=3, lease=LEASE_SECONDS)
    job_ids = queue_jobs(registry, thread_ids, prompt="[sim:tokens=40 token_delay=0.05] slow")

    def victim_is_streaming():
        with registry.environment(readonly=True) as env:
            attempts = env["llm.generation.job.attempt"].search(
                [("worker", "like", f":{victim.pid}"), ("outcome", "=", "running")]
            )
            jobs = attempts.mapped("job_id").ids
            return bool(attempts) and streaming(env, jobs) == set(jobs)

    deadline = time.monotonic() + 30
    while not victim_is_streaming():
        assert time.monotonic() < deadline, "the victim never started a job"
        time.sleep(0.05)
    victim.kill()
    wait_finished(registry, job_ids, timeout=60)
    jobs = assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        lost = env["llm.generation.job.attempt"].search(
            [("job_id", "in", job_ids), ("outcome", "=", "lost")]
        )
        assert lost and all(f":{victim.pid}" in w for w in lost.mapped("worker"))
        for job in env["llm.generation.job"].browse(lost.mapped("job_id").ids):
            assert job.attempt_ids.mapped("outcome") == ["lost", "completed"]
            assert job.retry_count == 1
            assert job.output_message_id.body.count(" ") >= 39  # the whole reply, once
    assert len(jobs) == 6


def test_failures_and_cancellation_with_workers(registry, start_workers, openai_server):
    thread_ids = setup_threads(registry, openai_server.url, 4, retry_delay=0)
    start_workers(2, lease=LEASE_SECONDS)
    retry, permanent, running, queued = thread_ids
    openai_server.push_fault(status=503, retry_after=1)  # the next request only
    job_ids = queue_jobs(registry, [retry], prompt="again")
    with registry.environment(readonly=True) as env:  # the first attempt took the fault
        deadline = time.monotonic() + 20
        while (
            env["llm.generation.job"].browse(job_ids).retry_count == 0
            and env["llm.generation.job"].browse(job_ids).state != "failed"
        ):
            assert time.monotonic() < deadline
            env.cr.commit()
            time.sleep(0.05)
    job_ids += queue_jobs(registry, [permanent], prompt="[sim:status=400] bad")
    long_job = queue_jobs(registry, [running], prompt="[sim:tokens=400 token_delay=0.02] go")
    with registry.environment() as env:  # wait until the long job streams, then cancel it
        job = env["llm.generation.job"].browse(long_job)
        deadline = time.monotonic() + 20
        while not streaming(env, job.ids):
            assert time.monotonic() < deadline
            env.cr.commit()
            time.sleep(0.05)
        job.action_cancel()
    with registry.environment() as env:  # a queued job, cancelled before any worker sees it
        env["llm.generation.queue"].search([]).action_disable()
    queued_id = queue_jobs(registry, [queued])
    with registry.environment() as env:
        env["llm.generation.job"].browse(queued_id).action_cancel()
        env["llm.generation.queue"].search([]).action_enable()
    wait_finished(registry, job_ids + long_job, timeout=30)
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"]
        retried, failed = jobs.browse(job_ids[0]), jobs.browse(job_ids[1])
        deadline = time.monotonic() + 15
        while retried.state != "completed" and time.monotonic() < deadline:
            env.cr.commit()
            time.sleep(0.2)
        assert (retried.state, retried.retry_count) == ("completed", 1)
        assert (failed.state, failed.error_kind, failed.retry_count) == ("failed", "permanent", 0)
        cancelled = jobs.browse(long_job)
        assert cancelled.state == "cancelled"
        assert cancelled.output_message_id.state == "cancelled"
        assert 0 < len(cancelled.output_message_id.body.split()) < 400
        assert jobs.browse(queued_id).state == "cancelled"


def test_a_stopped_worker_hands_its_jobs_back_at_once(registry, start_workers, openai_server):
    """SIGTERM: running jobs get LLMJOBS_STOP_TIMEOUT seconds, then go back to the queue, not
    counted as a retry, and another worker finishes them long before a lease (30 s) could
    expire."""
    thread_ids = setup_threads(registry, openai_server.url, 3)
    [leaving] = start_workers(1, concurrency=3, LLMJOBS_STOP_TIMEOUT="0.5")
    job_ids = queue_jobs(registry, thread_ids, prompt="[sim:tokens=150 token_delay=0.03] long")
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        deadline = time.monotonic() + 30
        while len(streaming(env, job_ids)) < 3:
            assert time.monotonic() < deadline, "the worker never streamed"
            env.cr.commit()
            time.sleep(0.05)
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=10) == 0
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"queued"}
        assert set(jobs.mapped("retry_count")) == {0}
        assert set(jobs.mapped("attempt_ids.outcome")) == {"interrupted"}
        [worker] = env["llm.generation.worker"].search([("pid", "=", leaving.pid)])
        assert worker.stopped_at and not worker.is_live
    handed_back = time.monotonic()
    start_workers(1, concurrency=3)
    wait_finished(registry, job_ids, timeout=60)
    assert time.monotonic() - handed_back < 25
    assert_one_reply_per_job(registry, job_ids)


def test_a_worker_in_another_process_starts_a_queued_job_at_once(
    registry, start_workers, openai_server
):
    """Its dispatcher polls every 2 s; a queued job must not wait for the poll: NOTIFY on
    PostgreSQL, SQLite's commit watcher on SQLite."""
    [thread_id] = setup_threads(registry, openai_server.url, 1)
    start_workers(1)
    with registry.environment() as env:
        provider_id = env["llm.thread"].browse(thread_id).provider_id.id
    deadline = time.monotonic() + 30
    while True:
        with registry.environment(readonly=True) as env:
            if env["llm.generation.worker"].live_count(provider_id):
                break
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.1)
    time.sleep(2.5)  # past the poll that followed its start
    waits = []
    for number in range(8):
        [job_id] = queue_jobs(registry, [thread_id], prompt=f"now {number}")
        wait_finished(registry, [job_id], timeout=30, poll=0.02)
        with registry.environment(readonly=True) as env:
            job = env["llm.generation.job"].browse(job_id)
            assert job.state == "completed"
            waits.append((job.started_at - job.queued_at).total_seconds())
        time.sleep(0.3)  # not in step with the worker's poll
    waits.sort()
    assert waits[5] < 0.5, f"seconds from queued to started: {waits}"
