"""The circuit breaker per provider on both databases: a storm of retryable failures cools
the provider down for every worker (the state is the queue's row), its queue says why and
until when, nothing is sent meanwhile, and one probe request decides: its success reopens
the provider, its failure cools it down again."""

from __future__ import annotations

import time

import pytest

from .conftest import make_provider


@pytest.fixture
def storm(registry, users, make_simulator):
    server = make_simulator("openai", tokens=3)
    with registry.environment() as env:
        provider, _ = make_provider(env, api_base=server.url)
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        queue.write({"breaker_threshold": 3, "breaker_cooldown_seconds": 1.5})
        threads = env["llm.thread"].create(
            [
                {"name": f"T{i}", "user_id": users["alice"], "provider_id": provider.id}
                for i in range(8)
            ]
        )
        return server, queue.id, threads.ids


def queue_job(registry, user_id, thread_id, retries=0) -> int:
    with registry.environment(user=user_id) as env:
        job = env["llm.generation.job"].create(
            {"thread_id": thread_id, "generation_inputs": {"prompt": "hello"}}
        )
        job.action_queue()
    with registry.environment() as env:
        env["llm.generation.job"].browse(job.id).write({"max_retries": retries})
    return job.id


def wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


def queue_state(registry, queue_id) -> dict:
    with registry.environment(readonly=True) as env:
        queue = env["llm.generation.queue"].browse(queue_id)
        return {
            "state": queue.breaker_state,
            "reason": queue.breaker_reason,
            "failures": queue.consecutive_failures,
            "waiting": queue.waiting_reason,
        }


def job_state(registry, job_id) -> str:
    with registry.environment(readonly=True) as env:
        return env["llm.generation.job"].browse(job_id).state


def test_a_storm_cools_the_provider_down_and_one_probe_reopens_it(registry, storm, users, runner):
    server, queue_id, threads = storm
    with registry.environment() as env:  # the storm hits three jobs at once
        env["llm.generation.queue"].browse(queue_id).action_disable()
    for _ in range(3):
        server.push_fault(status=503, message="overloaded")
    failing = [queue_job(registry, users["alice"], t) for t in threads[:3]]
    with registry.environment() as env:
        env["llm.generation.queue"].browse(queue_id).action_enable()
    wait(lambda: all(job_state(registry, j) == "failed" for j in failing), what="the storm")
    state = queue_state(registry, queue_id)
    assert state["state"] == "open" and state["failures"] == 3
    assert "overloaded" in state["reason"]

    waiting = [queue_job(registry, users["alice"], t, retries=3) for t in threads[3:6]]
    time.sleep(0.5)  # cooled down: nothing goes
    assert server.stats()["requests"] == 3
    assert {job_state(registry, j) for j in waiting} == {"queued"}
    state = queue_state(registry, queue_id)
    with registry.environment(user=users["manager"]) as env:
        from addons.llm_generation_job import monitoring

        found = monitoring.diagnose(env)
        assert any(p.startswith("Queue 'sim queue' is cooled down") for p in found["problems"])
        assert {q["health"] for q in found["queues"]} == {"critical"}
    assert state["waiting"].startswith("Cooled down since ")
    assert (
        "after 3 failures in a row" in state["waiting"] and "one probe request" in state["waiting"]
    )

    wait(lambda: all(job_state(registry, j) == "completed" for j in waiting), what="reopened")
    state = queue_state(registry, queue_id)
    assert state["state"] == "closed" and state["failures"] == 0 and not state["waiting"]
    assert server.stats()["requests"] == 6


def test_a_failed_probe_cools_the_provider_down_again(registry, storm, users, runner):
    server, queue_id, threads = storm
    for _ in range(4):  # three trip the breaker, the fourth fails the probe
        server.push_fault(status=503, message="still overloaded")
    first = [queue_job(registry, users["alice"], t) for t in threads[:3]]
    wait(lambda: all(job_state(registry, j) == "failed" for j in first), what="the storm")
    probe = queue_job(registry, users["alice"], threads[3])
    opened = queue_state(registry, queue_id)
    wait(lambda: job_state(registry, probe) == "failed", what="the probe")
    again = queue_state(registry, queue_id)
    assert again["state"] == "open" and again["failures"] == 4
    with registry.environment(readonly=True) as env:
        since = env["llm.generation.queue"].browse(queue_id).breaker_since
        assert since and opened["state"] == "open"
    assert server.stats()["requests"] == 4
    last = queue_job(registry, users["alice"], threads[4])
    wait(lambda: job_state(registry, last) == "completed", what="the second probe")
    assert queue_state(registry, queue_id)["state"] == "closed"


def test_permanent_failures_do_not_cool_a_provider_down(registry, storm, users, runner):
    server, queue_id, threads = storm
    for _ in range(4):
        server.push_fault(status=400, message="bad prompt")
    jobs = [queue_job(registry, users["alice"], t) for t in threads[:4]]
    wait(lambda: all(job_state(registry, j) == "failed" for j in jobs), what="the failures")
    assert queue_state(registry, queue_id)["state"] == "closed"
