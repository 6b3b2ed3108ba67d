"""Real ``llmjobs worker`` processes on PostgreSQL: exactly-once replies, the concurrency
limit across workers, surviving a SIGKILL, failures and cancellation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from addons.llm_generation_job.follow import wait_finished
from core import Registry

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE_SECONDS = "2"


@pytest.fixture
def cluster(pg_url, tmp_path, openai_server):
    """Starts worker processes on the test database; stops (or kills) them afterwards."""
    crons = tmp_path / "cron.yaml"
    crons.write_text("[]\n")
    env = {**os.environ, "LLMJOBS_DB_URL": pg_url, "LLMJOBS_CRON_FILE": str(crons),
           "LLMJOBS_JOB_LEASE_SECONDS": LEASE_SECONDS}
    llmjobs = shutil.which("llmjobs", path=str(Path(sys.executable).parent))
    registry = Registry(pg_url, addons=["llm_generation_job"])
    workers: list[subprocess.Popen] = []

    def start(count: int, concurrency: int = 8) -> list[subprocess.Popen]:
        worker_env = {**env, "LLMJOBS_WORKER_CONCURRENCY": str(concurrency)}
        started = [subprocess.Popen([llmjobs, "worker"], env=worker_env)
                   for _ in range(count)]
        workers.extend(started)
        return started

    yield registry, start
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            assert worker.wait(timeout=20) in (0, -signal.SIGKILL)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
    registry.close()


def setup_threads(registry, api_base, count, max_concurrent=6, retry_delay=0):
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "sim", "service": "openai", "api_base": api_base, "api_key": "sk"})
        model = env["llm.model"].create(
            {"name": "sim", "provider_id": provider.id, "default": True})
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        queue.write({"max_concurrent_jobs": max_concurrent,
                     "retry_delay_minutes": retry_delay})
        return env["llm.thread"].create([
            {"name": f"t{i}", "provider_id": provider.id, "model_id": model.id}
            for i in range(count)
        ]).ids


def queue_jobs(registry, thread_ids, per_thread=1, prompt="question"):
    with registry.environment() as env:
        jobs = env["llm.generation.job"].create([
            {"thread_id": thread_id, "generation_inputs": {"prompt": f"{prompt} {n}"}}
            for thread_id in thread_ids for n in range(per_thread)
        ])
        for job in jobs:
            job.action_queue()
        return jobs.ids


def assert_one_reply_per_job(registry, job_ids):
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"completed"}
        replies = env["llm.message"].search([("llm_role", "=", "assistant")])
        assert len(replies) == len(job_ids)
        assert sorted(jobs.mapped("output_message_id").ids) == sorted(replies.ids)
        assert set(replies.mapped("state")) == {"done"}
        return jobs


def test_four_workers_run_500_jobs_exactly_once_within_the_limit(cluster, openai_server):
    registry, start = cluster
    thread_ids = setup_threads(registry, openai_server.url, 50, max_concurrent=6)
    openai_server.reset_stats()
    start(4)
    job_ids = queue_jobs(registry, thread_ids, per_thread=10)
    wait_finished(registry, job_ids, timeout=180)
    jobs = assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        attempts = env["llm.generation.job.attempt"].search([("job_id", "in", job_ids)])
        assert len(attempts) == 500 and set(attempts.mapped("outcome")) == {"completed"}
        assert len(set(attempts.mapped("worker"))) > 1  # the work was shared
    stats = openai_server.wait_idle(timeout=10)
    assert stats["requests"] == 500
    assert 1 < stats["max_in_flight"] <= 6
    assert len(jobs) == 500


def test_sigkill_mid_job_loses_no_job_and_duplicates_no_reply(cluster, openai_server):
    registry, start = cluster
    thread_ids = setup_threads(registry, openai_server.url, 6, max_concurrent=6)
    victim, _survivor = start(2, concurrency=3)
    job_ids = queue_jobs(registry, thread_ids, prompt="[sim:tokens=40 token_delay=0.05] slow")

    def victim_is_streaming():
        with registry.environment(readonly=True) as env:
            attempts = env["llm.generation.job.attempt"].search(
                [("worker", "like", f":{victim.pid}"), ("outcome", "=", "running")])
            return bool(attempts) and all(a.job_id.output_message_id.body
                                          for a in attempts)

    deadline = time.monotonic() + 30
    while not victim_is_streaming():
        assert time.monotonic() < deadline, "the victim never started a job"
        time.sleep(0.05)
    victim.kill()
    wait_finished(registry, job_ids, timeout=60)
    jobs = assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        lost = env["llm.generation.job.attempt"].search(
            [("job_id", "in", job_ids), ("outcome", "=", "lost")])
        assert lost and all(f":{victim.pid}" in w for w in lost.mapped("worker"))
        for job in env["llm.generation.job"].browse(lost.mapped("job_id").ids):
            assert job.attempt_ids.mapped("outcome") == ["lost", "completed"]
            assert job.retry_count == 1
            assert job.output_message_id.body.count(" ") >= 39  # the whole reply, once
    assert len(jobs) == 6


def test_failures_and_cancellation_with_workers(cluster, openai_server):
    registry, start = cluster
    thread_ids = setup_threads(registry, openai_server.url, 4, retry_delay=0)
    start(2)
    retry, permanent, running, queued = thread_ids
    openai_server.push_fault(status=429, retry_after=1)  # the next request only
    job_ids = queue_jobs(registry, [retry], prompt="again")
    with registry.environment(readonly=True) as env:  # the first attempt took the fault
        deadline = time.monotonic() + 20
        while env["llm.generation.job"].browse(job_ids).retry_count == 0 and \
                env["llm.generation.job"].browse(job_ids).state != "failed":
            assert time.monotonic() < deadline
            env.cr.commit()
            time.sleep(0.05)
    job_ids += queue_jobs(registry, [permanent], prompt="[sim:status=400] bad")
    long_job = queue_jobs(registry, [running], prompt="[sim:tokens=400 token_delay=0.02] go")
    with registry.environment() as env:  # wait until the long job streams, then cancel it
        job = env["llm.generation.job"].browse(long_job)
        deadline = time.monotonic() + 20
        while not (job.output_message_id and job.output_message_id.body):
            assert time.monotonic() < deadline
            env.cr.commit()
            time.sleep(0.05)
        job.action_cancel()
    with registry.environment() as env:  # a queued job, cancelled before any worker sees it
        env["llm.generation.queue"].search([]).action_disable()
        queued_job = env["llm.generation.job"].browse(queue_jobs(registry, [queued]))
        queued_job.action_cancel()
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
        assert (failed.state, failed.error_kind, failed.retry_count) == (
            "failed", "permanent", 0)
        cancelled = jobs.browse(long_job)
        assert cancelled.state == "cancelled"
        assert cancelled.output_message_id.state == "cancelled"
        assert 0 < len(cancelled.output_message_id.body.split()) < 400
        assert queued_job.with_env(env).state == "cancelled"
