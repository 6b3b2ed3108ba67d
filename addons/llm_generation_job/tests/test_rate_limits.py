"""Provider rate limits shared by every worker, on both databases, against a simulator that
records every request it accepts: a queue's requests a minute and tokens a minute hold
whatever worker starts its jobs (four worker processes under 60 requests a minute send at
most 60 in any minute), its jobs wait with the reason and the time they may go; the
provider's own 429 holds every worker back; a storm of 429s cools the provider down for
every worker; an adaptive queue settles near the provider's limit, and grows only on
successes that started with all its slots taken."""

from __future__ import annotations

import statistics
import time

import pytest

from .conftest import make_provider
from .test_ordinary_user import wait_for_live_worker

FAST = "[sim:tokens=3]"


@pytest.fixture
def limited(registry, users, make_simulator):
    """``limited(queue_values, **simulator)``: a simulator, a provider on it whose queue has
    ``queue_values``, and ``queue(count, prompt)`` queueing Alice's jobs, a thread each."""

    def make(queue_values: dict, **settings):
        server = make_simulator("openai", **settings)
        with registry.environment() as env:
            provider, _ = make_provider(env, api_base=server.url)
            queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
            queue.write({"retry_delay_minutes": 0, **queue_values})
            ids = (provider.id, queue.id)

        def queue_jobs(count: int, prompt: str = FAST, options=None) -> list[int]:
            with registry.environment() as env:
                threads = env["llm.thread"].create(
                    [
                        {"name": f"T{i}", "user_id": users["alice"], "provider_id": ids[0]}
                        for i in range(count)
                    ]
                )
            with registry.environment(user=users["alice"]) as env:
                jobs = env["llm.generation.job"].create(
                    [
                        {
                            "thread_id": t,
                            "generation_inputs": {"prompt": prompt, "options": options or {}},
                        }
                        for t in threads.ids
                    ]
                )
                for job in jobs:
                    job.action_queue()
                return jobs.ids

        return server, ids, queue_jobs

    return make


def states(registry, job_ids) -> list[str]:
    with registry.environment(readonly=True) as env:
        return env["llm.generation.job"].browse(job_ids).mapped("state")


def queue_values(registry, queue_id, *names):
    with registry.environment(readonly=True) as env:
        queue = env["llm.generation.queue"].browse(queue_id)
        return [queue[name] for name in names]


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


def most_in_a_minute(times: list[float]) -> int:
    """The most requests any 60 seconds held (a window starting at each request)."""
    times = sorted(times)
    return max(
        (
            sum(1 for other in times[index:] if other < start + 60)
            for index, start in enumerate(times)
        ),
        default=0,
    )


def clear(registry, queue_id) -> None:
    with registry.environment() as env:
        env["llm.generation.queue"].browse(queue_id).action_clear_queue()


def test_requests_a_minute_hold_and_the_rest_wait_with_their_reason(registry, limited, runner):
    server, (_, queue_id), queue_jobs = limited({"rpm_limit": 5})
    job_ids = queue_jobs(8)
    wait(lambda: states(registry, job_ids).count("completed") == 5, 20, "five went")
    time.sleep(1.0)  # the runner keeps looking: nothing more goes this minute
    assert len(server.request_times()) == 5
    assert states(registry, job_ids).count("queued") == 3
    [reason, eligible] = queue_values(registry, queue_id, "waiting_reason", "eligible_at")
    assert reason.startswith("Rate limit of its provider: 5 requests a minute; the next one at ")
    assert eligible
    clear(registry, queue_id)


def test_tokens_a_minute_hold(registry, limited, runner):
    # A prompt of 30 words (the simulator's tokens; about 40 estimated) and a reply of 20:
    # 50 tokens a job, about 60 expected when it starts.
    server, (_, queue_id), queue_jobs = limited({"tpm_limit": 170})
    prompt = "[sim:tokens=20] " + "word " * 30
    queue_jobs(6, prompt, {"max_tokens": 20})
    wait(lambda: len(server.request_times()) >= 3, 20, "three went")
    time.sleep(1.0)
    assert len(server.request_times()) == 3  # 3 x 50 of 170: a fourth would pass it
    [reason] = queue_values(registry, queue_id, "waiting_reason")
    assert reason.startswith("Rate limit of its provider: 170 tokens a minute")
    clear(registry, queue_id)


def test_the_providers_429_holds_every_worker_back(registry, limited, runner):
    # The provider allows 3 requests a minute; the queue knows no limit of its own.
    server, (_, queue_id), queue_jobs = limited({"breaker_threshold": 0}, rpm_limit=3)
    job_ids = queue_jobs(6)
    wait(lambda: server.stats()["rate_limited"] >= 1, 20, "the provider refused one")
    time.sleep(1.0)
    stats = server.stats()
    assert stats["rate_limited"] <= 4  # the claims made before the first 429 was recorded
    assert states(registry, job_ids).count("completed") == 3
    assert "failed" not in states(registry, job_ids)  # held back, not failed
    [until, reason] = queue_values(registry, queue_id, "throttled_until", "waiting_reason")
    assert until and reason.startswith("The provider asked to wait (rate limited) until ")
    with registry.environment(readonly=True) as env:
        held = env["llm.generation.job.attempt"].search([("outcome", "=", "interrupted")])
        assert held and all("HTTP 429" in attempt.error_message for attempt in held)
        assert set(held.mapped("job_id.retry_count")) == {0}
    clear(registry, queue_id)


def test_an_adaptive_queue_settles_near_the_providers_limit(registry, limited, runner):
    server, (_, queue_id), queue_jobs = limited(
        {"adaptive_concurrency": True, "min_concurrency": 1, "max_concurrent_jobs": 12},
        max_in_flight=3,
    )
    job_ids = queue_jobs(40, "[sim:tokens=10 token_delay=0.02]")
    samples, deadline = [], time.monotonic() + 90
    while "queued" in (found := states(registry, job_ids)) or "running" in found:
        assert time.monotonic() < deadline, found
        [current] = queue_values(registry, queue_id, "current_concurrency")
        samples.append(current)
        time.sleep(0.05)
    assert set(states(registry, job_ids)) == {"completed"}
    settled = samples[len(samples) // 3 :]
    assert 2 <= statistics.mean(settled) <= 5, samples
    assert max(samples) <= 6  # it never ran far past the provider's limit
    assert server.stats()["rate_limited"] < len(job_ids)


@pytest.mark.slow
@pytest.mark.clock  # a minute and more of waiting: it runs beside the other slow tests
@pytest.mark.timeout(240)
def test_four_workers_under_60_requests_a_minute_send_at_most_60_in_any_minute(
    registry, limited, start_workers
):
    server, (provider_id, queue_id), queue_jobs = limited(
        {"rpm_limit": 60, "max_concurrent_jobs": 16}
    )
    start_workers(4, concurrency=4)
    wait_for_live_worker(registry, provider_id)
    job_ids = queue_jobs(90)
    started = time.monotonic()
    wait(lambda: len(server.request_times()) >= 60, 60, "the first minute's 60")
    time.sleep(max(0.0, 66 - (time.monotonic() - started)))  # into the second minute
    times = server.request_times()
    assert len(times) > 60  # the second minute began
    assert most_in_a_minute(times) <= 60
    assert states(registry, job_ids).count("failed") == 0
    clear(registry, queue_id)


@pytest.mark.slow
def test_a_429_storm_cools_the_provider_down_for_every_worker(registry, limited, start_workers):
    server, (provider_id, queue_id), queue_jobs = limited(
        {"breaker_threshold": 3, "breaker_cooldown_seconds": 4, "max_concurrent_jobs": 8}
    )
    start_workers(2, concurrency=4)
    wait_for_live_worker(registry, provider_id)
    for _ in range(6):  # every job of the first wave is refused
        server.push_fault(status=429, retry_after=0)
    job_ids = queue_jobs(6)
    wait(lambda: queue_values(registry, queue_id, "breaker_state")[0] == "open", 20, "cooled down")
    [since, until] = queue_values(registry, queue_id, "breaker_since", "breaker_until")
    wait(lambda: set(states(registry, job_ids)) == {"completed"}, 60, "reopened")
    times = server.request_times()
    during = [t for t in times if since.timestamp() + 0.2 < t < until.timestamp() - 0.2]
    assert during == []  # neither worker sent anything while it was cooled down
    assert queue_values(registry, queue_id, "breaker_state") == ["closed"]
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("retry_count")) == {0}  # held back, not failed


def test_a_models_own_limit_holds_its_jobs_and_says_so(registry, limited, runner):
    server, (provider_id, queue_id), queue_jobs = limited({})
    with registry.environment() as env:
        env["llm.model"].search([("provider_id", "=", provider_id)]).write({"rpm_limit": 2})
    job_ids = queue_jobs(4)
    wait(lambda: states(registry, job_ids).count("completed") == 2, 20, "two went")
    time.sleep(1.0)
    assert len(server.request_times()) == 2
    with registry.environment(readonly=True) as env:
        waiting = (
            env["llm.generation.job"].browse(job_ids).filtered(lambda job: job.state == "queued")
        )
        assert len(waiting) == 2
        for job in waiting:
            assert job.waiting_reason.startswith(
                "Rate limit of model 'sim-model': 2 requests a minute; the next one at "
            )
            assert job.eligible_at
    clear(registry, queue_id)


def test_an_adaptive_queue_grows_no_further_than_the_provider_has_requests_left(
    registry, limited, runner
):
    server, (_, queue_id), queue_jobs = limited(
        {"adaptive_concurrency": True, "min_concurrency": 1, "max_concurrent_jobs": 12},
        rpm_limit=6,  # its remaining-requests headers count down from 5
    )
    job_ids = queue_jobs(6)
    wait(lambda: set(states(registry, job_ids)) == {"completed"}, 30, "all done")
    # 1 -> 2 -> 3 as they succeed; the next raise would need more than 3 requests left.
    assert queue_values(registry, queue_id, "current_concurrency") == [3]
    assert server.stats()["rate_limited"] == 0


def test_an_adaptive_queue_grows_only_on_successes_that_started_with_its_slots_full(
    registry, limited
):
    """Its only worker has 2 slots: jobs that started 2 at a time raise it from 2 to 3, and
    none can start 3 at a time, so nothing shows the provider would take more than 3."""
    from addons.llm_generation_job.runner import JobRunner

    server, (_, queue_id), queue_jobs = limited(
        {"adaptive_concurrency": True, "min_concurrency": 1, "max_concurrent_jobs": 12}
    )
    job_ids = queue_jobs(20)
    runner = JobRunner(registry, concurrency=2, poll_interval=0.2)
    runner.start()
    try:
        wait(lambda: set(states(registry, job_ids)) == {"completed"}, 60, "all done")
    finally:
        runner.stop(timeout=5)
    assert queue_values(registry, queue_id, "current_concurrency") == [3]
    with registry.environment(readonly=True) as env:
        attempts = env["llm.generation.job.attempt"].search([("job_id", "in", job_ids)])
        assert len(attempts) == 20 and 1 <= sum(attempts.mapped("started_full")) < 20
    assert server.stats()["rate_limited"] == 0


def test_a_models_tokens_a_minute_hold_its_jobs(registry, limited, runner):
    server, (provider_id, queue_id), queue_jobs = limited({})
    with registry.environment() as env:
        env["llm.model"].search([("provider_id", "=", provider_id)]).write({"tpm_limit": 120})
    # 50 tokens a job (about 60 expected at its start): two fit in 120, not three.
    job_ids = queue_jobs(4, "[sim:tokens=20] " + "word " * 30, {"max_tokens": 20})
    wait(lambda: states(registry, job_ids).count("completed") == 2, 20, "two went")
    time.sleep(1.0)
    assert len(server.request_times()) == 2
    with registry.environment(readonly=True) as env:
        waiting = (
            env["llm.generation.job"].browse(job_ids).filtered(lambda job: job.state == "queued")
        )
        assert len(waiting) == 2
        assert all(
            job.waiting_reason.startswith("Rate limit of model 'sim-model': 120 tokens a minute")
            for job in waiting
        )
    clear(registry, queue_id)
