"""The usage ledger on both databases, as ordinary users make it: a row per attempt, written
with the attempt's end, its tokens those the provider reported (or estimated, marked so), its
cost by the model's prices; totals that equal what the simulator served."""

from __future__ import annotations

import time

import pytest

from addons.llm_thread.simulator import count_tokens

from .conftest import make_provider

PRICES = {"input_price": 3.0, "output_price": 15.0, "cached_input_price": 0.3}


@pytest.fixture
def priced(registry, users, make_simulator):
    """``priced(**simulator)``: a simulator, a provider on it whose model has prices, and
    ``threads(count)`` of Alice's on it."""

    def make(protocol="openai", **settings):
        server = make_simulator(protocol, **settings)
        with registry.environment() as env:
            provider, model = make_provider(env, api_base=server.url, service=protocol)
            model.write(PRICES)
            env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
                {"max_concurrent_jobs": 8}
            )
            ids = (provider.id, model.id)

        def threads(count: int) -> list[int]:
            with registry.environment() as env:
                return (
                    env["llm.thread"]
                    .create(
                        [
                            {
                                "name": f"T{index}",
                                "user_id": users["alice"],
                                "provider_id": ids[0],
                                "model_id": ids[1],
                            }
                            for index in range(count)
                        ]
                    )
                    .ids
                )

        return server, threads

    return make


def queue_jobs(registry, user_id, thread_ids, prompt="Count the tokens of this prompt") -> list:
    with registry.environment(user=user_id) as env:
        jobs = env["llm.generation.job"].create(
            [{"thread_id": t, "generation_inputs": {"prompt": prompt}} for t in thread_ids]
        )
        for job in jobs:
            job.action_queue()
        return jobs.ids


def wait_finished(registry, job_ids, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with registry.environment(readonly=True) as env:
            active = env["llm.generation.job"].search_count(
                [("id", "in", job_ids), ("state", "in", ["queued", "running"])]
            )
        if not active:
            return
        assert time.monotonic() < deadline, f"{active} jobs still active"
        time.sleep(0.05)


def test_the_ledger_equals_what_the_provider_served(registry, priced, users, runner, protocol):
    server, threads = priced(protocol, tokens=25)
    prompt = "Count the tokens of this prompt"
    job_ids = queue_jobs(registry, users["alice"], threads(12), prompt)
    wait_finished(registry, job_ids)
    stats = server.wait_idle()
    with registry.environment(user=users["alice"]) as env:
        rows = env["llm.generation.usage"].search([])
        assert sorted(rows.mapped("job_id").ids) == sorted(job_ids)
        assert set(rows.mapped("outcome")) == {"completed"} and not any(rows.mapped("estimated"))
        assert sum(rows.mapped("completion_tokens")) == stats["completion_tokens"] == 12 * 25
        assert sum(rows.mapped("prompt_tokens")) == stats["prompt_tokens"]
        assert stats["prompt_tokens"] >= 12 * count_tokens(prompt)
        for row in rows:
            expected = (row.prompt_tokens * 3.0 + row.completion_tokens * 15.0) / 1e6
            assert row.priced and row.cost == pytest.approx(expected)
            assert row.attempt_id.job_id == row.job_id and row.user_id.id == users["alice"]
            assert row.execution_mode == "stream" and row.total_tokens > 0
    with registry.environment(user=users["bob"]) as env:
        assert not env["llm.generation.usage"].search([])  # not his


@pytest.fixture(params=["openai", "anthropic"])
def protocol(request) -> str:
    return request.param


def test_a_cancelled_streams_partial_usage_is_in_the_ledger(registry, priced, users, runner):
    server, threads = priced(tokens=200, token_delay=0.02)
    [job_id] = queue_jobs(registry, users["alice"], threads(1))
    deadline = time.monotonic() + 20
    while True:
        with registry.environment(readonly=True) as env:
            if len(env["llm.generation.job"].browse(job_id).chunk_ids) >= 3:
                break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with registry.environment(user=users["alice"]) as env:
        env["llm.generation.job"].browse(job_id).action_cancel()
    wait_finished(registry, [job_id])
    served = server.wait_idle()["completion_tokens"]
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(job_id)
        [row] = env["llm.generation.usage"].search([("job_id", "=", job_id)])
        assert job.state == "cancelled" and row.outcome == "cancelled"
        assert row.estimated  # a cut stream reports no usage
        partial = job.output_message_id.body
        assert partial and row.completion_tokens == -(-len(partial) // 4)
        assert 0 < served < 200 and row.prompt_tokens > 0
        assert row.cost == pytest.approx(
            (row.prompt_tokens * 3.0 + row.completion_tokens * 15.0) / 1e6
        )


def test_failed_attempts_before_any_token_cost_nothing(registry, priced, users, runner):
    server, threads = priced(tokens=10)
    server.push_fault(status=400, message="bad request")
    [job_id] = queue_jobs(registry, users["alice"], threads(1))
    wait_finished(registry, [job_id])
    with registry.environment(readonly=True) as env:
        [row] = env["llm.generation.usage"].search([("job_id", "=", job_id)])
        assert row.outcome == "failed" and not row.estimated
        assert (row.prompt_tokens, row.completion_tokens, row.cost) == (0, 0, 0.0)


def test_a_model_without_prices_costs_nothing_and_says_so(registry, users, runner, make_simulator):
    server = make_simulator("openai", tokens=5)
    with registry.environment() as env:
        provider, _ = make_provider(env, api_base=server.url)
        thread = env["llm.thread"].create(
            {"name": "T", "user_id": users["alice"], "provider_id": provider.id}
        )
        thread_id = thread.id
    [job_id] = queue_jobs(registry, users["alice"], [thread_id])
    wait_finished(registry, [job_id])
    with registry.environment(readonly=True) as env:
        [row] = env["llm.generation.usage"].search([("job_id", "=", job_id)])
        assert row.completion_tokens == 5 and row.cost == 0.0 and not row.priced
