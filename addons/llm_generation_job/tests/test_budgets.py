"""Budgets on both databases, as ordinary users meet them: a job that would pass a hard limit
is refused with an error naming the budget, its period and when it resets, and nothing is
sent; jobs queued before wait at claim; a soft threshold warns once a period; only managers
set budgets."""

from __future__ import annotations

import logging
import time

import pytest

from core import AccessError, UserError, ValidationError

from .conftest import make_provider

DOLLAR_A_TOKEN = {"input_price": 1_000_000.0, "output_price": 1_000_000.0}
OPTIONS = {"max_tokens": 5}  # a reply of 5 tokens; a prompt "hi" of 1: $6 a job


@pytest.fixture
def shop(registry, users, make_simulator):
    """A provider on a simulator whose model costs a dollar a token; returns (server,
    provider id, a function making Alice's threads)."""
    server = make_simulator("openai", tokens=20)
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=server.url)
        model.write(DOLLAR_A_TOKEN)
        ids = (provider.id, model.id)

    def thread() -> int:
        with registry.environment() as env:
            return (
                env["llm.thread"]
                .create(
                    {
                        "name": "T",
                        "user_id": users["alice"],
                        "provider_id": ids[0],
                        "model_id": ids[1],
                    }
                )
                .id
            )

    return server, ids[0], thread


def budget(registry, **values) -> int:
    with registry.environment() as env:
        return env["llm.budget"].create({"name": "Alice's month", **values}).id


def generate(registry, user_id: int, thread_id: int) -> list[dict]:
    with registry.environment(user=user_id) as env:
        thread = env["llm.thread"].browse(thread_id)
        return list(thread.generate_response("hi", use_queue=True, **OPTIONS))


def test_a_job_past_the_hard_limit_is_refused_and_nothing_is_sent(registry, shop, users, runner):
    server, _, thread = shop
    budget(registry, scope="user", user_id=users["alice"], period="month", hard_limit=10)
    generate(registry, users["alice"], thread())
    with registry.environment(readonly=True) as env:
        [row] = env["llm.generation.usage"].search([])
        assert row.cost == pytest.approx(6.0) and row.job_id.state == "completed"
    requests = server.stats()["requests"]

    second = thread()
    with pytest.raises(UserError) as refused:
        generate(registry, users["alice"], second)
    message = str(refused.value)
    assert "budget 'Alice's month' (of user alice, per month)" in message
    assert "$6.0000 of $10.0000 spent" in message and "would cost about $6.0000" in message
    assert "it resets at" in message and "-01 00:00 UTC" in message
    assert server.stats()["requests"] == requests  # nothing sent
    with registry.environment(readonly=True) as env:
        assert not env["llm.generation.job"].search([("thread_id", "=", second)])
        assert not env["llm.message"].search([("thread_id", "=", second)])  # nothing written

    # Bob has no budget of his own: he goes on.
    bobs = thread()
    with registry.environment() as env:
        env["llm.thread"].browse(bobs).write({"user_id": users["bob"]})
    generate(registry, users["bob"], bobs)
    with registry.environment(readonly=True) as env:
        assert env["llm.generation.job"].search([("thread_id", "=", bobs)]).state == "completed"


def test_jobs_queued_before_the_limit_wait_at_claim(registry, shop, users, runner):
    server, provider_id, thread = shop
    budget(registry, scope="provider", provider_id=provider_id, period="day", hard_limit=10)
    with registry.environment() as env:
        env["llm.generation.queue"]._get_or_create_queue(provider_id).action_disable()
    job_ids = []
    for _ in range(2):  # each fits alone: $6 of $10
        with registry.environment(user=users["alice"]) as env:
            job = env["llm.generation.job"].create(
                {"thread_id": thread(), "generation_inputs": {"prompt": "hi", "options": OPTIONS}}
            )
            job.action_queue()
            job_ids.append(job.id)
    with registry.environment() as env:
        env["llm.generation.queue"]._get_or_create_queue(provider_id).action_enable()
    deadline = time.monotonic() + 20
    while True:
        with registry.environment(readonly=True) as env:
            first, second = env["llm.generation.job"].browse(job_ids)
            if first.state == "completed" and second.waiting_reason:
                break
        assert time.monotonic() < deadline, (first.state, second.state, second.waiting_reason)
        time.sleep(0.05)
    time.sleep(0.5)  # the runner keeps looking: the second still waits
    with registry.environment(readonly=True) as env:
        second = env["llm.generation.job"].browse(job_ids[1])
        assert second.state == "queued" and not second.attempt_ids
        assert "of provider 'sim', per day" in second.waiting_reason
        assert second.eligible_at
    assert server.stats()["requests"] == 1
    with registry.environment(user=users["alice"]) as env:
        from addons.llm_generation_job import monitoring

        found = monitoring.diagnose(env)
        [waiting] = [item for item in found["stuck"] if item["kind"] == "budget"]
        assert waiting["id"] == job_ids[1] and "has too little left" in waiting["reason"]
        assert any("waiting for a budget to reset" in p for p in found["problems"])


def test_a_soft_threshold_warns_once_a_period(registry, shop, users, runner, caplog):
    _, _, thread = shop
    budget_id = budget(registry, scope="all", period="month", soft_limit=5, hard_limit=100)
    caplog.set_level(logging.WARNING)
    generate(registry, users["alice"], thread())
    generate(registry, users["alice"], thread())
    warnings = [r.getMessage() for r in caplog.records if "soft threshold" in r.getMessage()]
    assert warnings == [
        "The budget 'Alice's month' (of everyone, per month) passed its soft threshold of $5.0000"
    ]
    with registry.environment(readonly=True) as env:
        assert env["llm.budget"].browse(budget_id).soft_warned_at


def test_budgets_are_for_managers_and_checked(registry, users):
    with registry.environment(user=users["alice"]) as env, pytest.raises(AccessError):
        env["llm.budget"].create(
            {"name": "mine", "scope": "user", "user_id": users["alice"], "hard_limit": 1}
        )
    with registry.environment(user=users["manager"]) as env:
        with pytest.raises(ValidationError, match="is a user's: set its user_id"):
            env["llm.budget"].create({"name": "x", "scope": "user", "hard_limit": 1})
        with pytest.raises(ValidationError, match="soft threshold .* is above its hard limit"):
            env["llm.budget"].create(
                {"name": "x", "scope": "all", "soft_limit": 5, "hard_limit": 1}
            )
        env["llm.budget"].create(
            [
                {"name": "Alice's", "scope": "user", "user_id": users["alice"], "hard_limit": 1},
                {"name": "Bob's", "scope": "user", "user_id": users["bob"], "hard_limit": 1},
            ]
        )
    with registry.environment(user=users["alice"]) as env:
        assert env["llm.budget"].search([]).mapped("name") == ["Alice's"]
