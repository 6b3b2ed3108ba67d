"""Fair share between users on a busy queue, on both databases: with 4 slots, one user's 100
long jobs queued first do not starve another's 10 short ones, which finish within a small
factor of their time alone (first come, first served would make them wait for all 100)."""

from __future__ import annotations

import time

import pytest

from .conftest import make_provider

LONG = "[sim:tokens=50 token_delay=0.02]"  # about a second
SHORT = "[sim:tokens=10 token_delay=0.02]"  # about 0.2 s


@pytest.fixture
def shared_queue(registry, users, make_simulator):
    server = make_simulator("openai")
    with registry.environment() as env:
        provider, _ = make_provider(env, api_base=server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            {"max_concurrent_jobs": 4, "fair_share": "user"}
        )
        return provider.id


def queue_jobs(registry, user_id: int, provider_id: int, prompt: str, count: int) -> list[int]:
    with registry.environment() as env:
        threads = env["llm.thread"].create(
            [
                {"name": f"T{i}", "user_id": user_id, "provider_id": provider_id}
                for i in range(count)
            ]
        )
    with registry.environment(user=user_id) as env:
        jobs = env["llm.generation.job"].create(
            [
                {"thread_id": t, "generation_inputs": {"prompt": f"{prompt} {t}"}}
                for t in threads.ids
            ]
        )
        for job in jobs:
            job.action_queue()
        return jobs.ids


def finished(registry, job_ids) -> bool:
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        return all(state == "completed" for state in jobs.mapped("state"))


def time_until_done(registry, job_ids, start: float, timeout: float = 60.0) -> float:
    while not finished(registry, job_ids):
        assert time.monotonic() - start < timeout, "not done"
        time.sleep(0.02)
    return time.monotonic() - start


def test_short_jobs_of_one_user_are_not_starved_by_another_users_long_ones(
    registry, shared_queue, users, runner
):
    start = time.monotonic()
    alone = time_until_done(
        registry, queue_jobs(registry, users["bob"], shared_queue, SHORT, 10), start
    )

    queue_jobs(registry, users["alice"], shared_queue, LONG, 100)
    start = time.monotonic()
    bobs = queue_jobs(registry, users["bob"], shared_queue, SHORT, 10)
    shared = time_until_done(registry, bobs, start)

    first_come_first_served = 100 / 4 * 1.0  # seconds before Bob's first job would start
    assert shared < 3 * alone + 1.5, (shared, alone)
    assert shared < first_come_first_served / 5
    with registry.environment() as env:  # done: Alice's backlog is not needed any more
        queue = env["llm.generation.queue"].search([("provider_id", "=", shared_queue)])
        queue.action_clear_queue()
        for job in env["llm.generation.job"].search([("state", "=", "running")]):
            job.action_cancel()


def test_without_fair_share_the_queue_is_first_come_first_served(
    registry, shared_queue, users, runner
):
    with registry.environment() as env:
        env["llm.generation.queue"].search([("provider_id", "=", shared_queue)]).write(
            {"fair_share": "none", "enabled": False}
        )
    alices = queue_jobs(registry, users["alice"], shared_queue, SHORT, 6)
    bobs = queue_jobs(registry, users["bob"], shared_queue, SHORT, 2)
    with registry.environment() as env:
        env["llm.generation.queue"].search([("provider_id", "=", shared_queue)]).action_enable()
    time_until_done(registry, alices + bobs, time.monotonic())
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(alices + bobs)
        order = [job.id for job in jobs.sorted(lambda job: (job.started_at, job.id))]
    assert order[-2:] == bobs  # Bob's came last, as they were queued
