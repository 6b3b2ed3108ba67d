"""Queues: one per provider, concurrency limit, health, statistics and manager actions."""

import datetime as dt

import pytest

from addons.llm_generation_job.store import JobStore
from core import RegistryError, UserError

from .conftest import make_provider


def queued_jobs(env, thread, count):
    jobs = env["llm.generation.job"].create([{"thread_id": thread.id} for _ in range(count)])
    for job in jobs:
        job.action_queue()
    return jobs


def test_one_queue_per_provider(env, thread):
    queues = env["llm.generation.queue"]
    queue = queues._get_or_create_queue(thread.provider_id.id)
    assert queue == queues._get_or_create_queue(thread.provider_id)
    assert (queue.enabled, queue.max_concurrent_jobs, queue.retry_delay_minutes) == (True, 5, 5)
    with pytest.raises(UserError, match="A queue already exists for provider 'sim'"):
        queues.create({"provider_id": thread.provider_id.id})


def test_claims_never_exceed_the_limit_and_follow_priority(env, thread):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    queue.max_concurrent_jobs = 2
    jobs = queued_jobs(env, thread, 4)
    jobs[3].priority = 10
    leases = JobStore(env).claim(thread.provider_id.id, "test")
    assert [lease.job_id for lease in leases] == [jobs[3].id, jobs[0].id]
    assert JobStore(env).claim(thread.provider_id.id, "test") == []
    assert queue.current_running_jobs == 2 and queue.queued_jobs_count == 2


def test_disabled_queue_starts_nothing(env, thread):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    queued_jobs(env, thread, 1)
    queue.action_disable()
    assert queue.health == "disabled"
    assert JobStore(env).claim(thread.provider_id.id, "test") == []
    assert env["llm.generation.queue"].search([("health", "=", "disabled")]) == queue
    queue.action_enable()
    assert len(JobStore(env).claim(thread.provider_id.id, "test")) == 1


def test_health_warning_and_critical(env, thread):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    queue.max_concurrent_jobs = 1
    assert queue.health == "healthy"
    queued_jobs(env, thread, 2)
    JobStore(env).claim(thread.provider_id.id, "test")
    env.invalidate_all()
    assert queue.health == "warning"
    queued_jobs(env, thread, 2)
    env.invalidate_all()
    assert queue.health == "critical"  # saturated with a backlog over twice the limit
    assert env["llm.generation.queue"].search([("health", "in", ["critical"])]) == queue


def test_health_is_critical_when_most_recent_jobs_fail(env, thread):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    for job in queued_jobs(env, thread, 6):
        job.action_fail("provider down")
    env.invalidate_all()
    assert queue.health == "critical"


def test_clear_queue_and_retry_failed(env, thread):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    jobs = queued_jobs(env, thread, 3)
    jobs[0].action_fail("x")
    assert queue.action_clear_queue() == 2
    assert jobs[1].state == "cancelled" and jobs[1].error_message == "Queue cleared by a manager."
    assert queue.action_retry_failed_jobs() == 1
    assert jobs[0].state == "queued" and jobs[0].retry_count == 1


def test_queue_stats(env, thread):
    queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
    jobs = queued_jobs(env, thread, 3)
    now = dt.datetime.now(dt.UTC)
    for job, (wait, run, state) in zip(
        jobs[:2], [(1, 3, "completed"), (3, 5, "failed")], strict=True
    ):
        job.write_where(
            [],
            {
                "state": state,
                "queued_at": now - dt.timedelta(seconds=wait + run),
                "started_at": now - dt.timedelta(seconds=run),
                "completed_at": now,
            },
        )
    stats = queue.get_queue_stats()
    assert stats["provider_name"] == "sim" and stats["job_counts"]["queued"] == 1
    performance = stats["performance"]
    assert performance["avg_queue_time"] == pytest.approx(2.0, abs=0.01)
    assert performance["avg_processing_time"] == pytest.approx(4.0, abs=0.01)
    assert performance["success_rate"] == 50.0
    assert performance["throughput_per_hour"] == pytest.approx(1 / 24)
    assert performance["oldest_queued_age"] >= 0


def test_queue_info_and_auto_detection_rule(env, thread):
    provider = thread.provider_id
    assert provider.get_generation_queue_info()["supports_queue"] is False
    queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
    info = provider.get_generation_queue_info()
    assert info["supports_queue"] is True and info["max_concurrent_jobs"] == 5
    assert info["supports_streaming"] and info["supports_cancellation"]
    queue.action_disable()
    assert provider.get_generation_queue_info()["supports_queue"] is False


def test_a_provider_without_queue_gets_one_on_first_use(env):
    provider, _model = make_provider(env, name="fresh")
    assert not env["llm.generation.queue"].search([("provider_id", "=", provider.id)])
    env["llm.generation.queue"]._process_provider_queue(provider)
    assert env["llm.generation.queue"].search([("provider_id", "=", provider.id)])


def test_a_worker_serves_only_its_queues(registry, openai_server):
    from addons.llm_generation_job.follow import wait_finished
    from addons.llm_generation_job.runner import JobRunner

    with registry.environment() as env:
        jobs = env["llm.generation.job"]
        for name in ("served", "other"):
            provider, model = make_provider(env, api_base=openai_server.url, name=name)
            env["llm.generation.queue"]._get_or_create_queue(provider.id)
            thread = env["llm.thread"].create(
                {"name": name, "provider_id": provider.id, "model_id": model.id}
            )
            jobs |= env["llm.generation.job"].create(
                {"thread_id": thread.id, "generation_inputs": {"prompt": "hi"}}
            )
        for job in jobs:
            job.action_queue()
        served, other = jobs.ids
        providers = jobs.mapped("provider_id").ids
    with pytest.raises(RegistryError, match="unknown providers: nope"):
        JobRunner(registry, queues=["served", "nope"]).start()
    runner = JobRunner(registry, concurrency=2, poll_interval=0.05, queues=["served"])
    runner.start()
    try:
        wait_finished(registry, [served], timeout=10)
        with registry.environment(readonly=True) as env:
            workers = env["llm.generation.worker"]
            assert [workers.live_count(p) for p in providers] == [1, 0]
            assert env["llm.generation.job"].browse([served, other]).mapped("state") == [
                "completed",
                "queued",
            ]
    finally:
        runner.stop()
