"""Fault injection, the provider's side: each fault the loopback simulator can inject, once,
into a queued generation that an ordinary user follows. A retryable fault is retried with
backoff and the job completes with the whole reply, the follower seeing the retry and never
an error; a permanent one (a refusal, or a stream that does not speak the protocol) fails the
job at once with the provider's message; a 429 is the provider's back-pressure: the job waits
in line for its Retry-After, with no retry used. A partial reply is never presented as final.

"Before the first byte" is as near as HTTP gets: the provider answered 200 and its headers,
then the connection closed before any of the reply."""

from __future__ import annotations

import pytest

TOKENS = 12
RETRYABLE = {
    "500": {"status": 500},
    "503 with Retry-After": {"status": 503, "retry_after": 1},
    "502": {"status": 502},
    "503": {"status": 503, "message": "overloaded"},
    "connection reset before the first byte of the reply": {"cut_after": 0},
    "connection reset midway": {"cut_after": 4},
    "an error event midway": {"stream_error_after": 3, "message": "overloaded_error"},
    "a hang past the read timeout": {"first_token_delay": 3},
}
PERMANENT = {
    "400": ({"status": 400, "message": "max_tokens is too large"}, "max_tokens is too large"),
    "401": ({"status": 401, "message": "Incorrect API key provided"}, "Incorrect API key"),
    # Not JSON where the protocol says JSON: a provider (or whatever answers at its address)
    # that does not speak the protocol would answer the same to a retry.
    "a malformed event": ({"malformed_after": 2}, "Malformed response stream: invalid JSON"),
}


@pytest.fixture
def faulty(registry, users, make_simulator):
    """A simulator of its own, a provider on it (1 s read timeout), an immediate retry policy,
    and a thread of Alice's; returns (simulator, thread id)."""
    simulator = make_simulator("openai", tokens=TOKENS)
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {
                "name": "sim",
                "service": "openai",
                "api_base": simulator.url,
                "api_key": "sk-x",
                "timeout": 1.0,
            }
        )
        env["llm.model"].create({"name": "m", "provider_id": provider.id, "default": True})
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            {"retry_delay_minutes": 0}
        )
        thread = env["llm.thread"].with_user(users["alice"]).create({"provider_id": provider.id})
        return simulator, thread.id


def follow(registry, users, thread_id) -> list[dict]:
    with registry.environment(user=users["alice"]) as env:
        thread = env["llm.thread"].browse(thread_id)
        return list(thread.generate_response("tell me", use_queue=True))


def presented_as_final(updates: list[dict]) -> set[str]:
    """The bodies of every assistant message an update shows as done."""
    return {
        update["message"]["body"]
        for update in updates
        if isinstance(update.get("message"), dict)
        and update["message"]["llm_role"] == "assistant"
        and update["message"]["state"] == "done"
    }


@pytest.mark.parametrize("fault", RETRYABLE.values(), ids=RETRYABLE.keys())
def test_a_retryable_fault_is_retried_and_the_job_completes(registry, users, runner, faulty, fault):
    simulator, thread_id = faulty
    simulator.push_fault(**fault)
    updates = follow(registry, users, thread_id)
    assert not [u for u in updates if u["type"] == "error"], updates
    retrying = [u for u in updates if u.get("state") == "retrying"]
    assert len(retrying) == 1 and "Retrying at" in retrying[0]["message"]
    assert [u["type"] for u in updates if u["type"] == "restart"] in ([], ["restart"])
    assert updates[-1]["type"] == "done"
    reply = updates[-1]["message"]
    assert presented_as_final(updates) == {reply["body"]}  # never a partial one
    assert reply["state"] == "done" and len(reply["body"].split()) == TOKENS
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(updates[-1]["job_id"])
        assert job.state == "completed" and job.retry_count == 1
        first, second = job.attempt_ids
        assert (first.outcome, second.outcome) == ("failed", "completed")
        if fault.get("retry_after"):
            assert (second.started_at - first.ended_at).total_seconds() >= fault["retry_after"]
        assert job.output_message_id.body == reply["body"]
        assistant = job.thread_id.message_ids.filtered(lambda m: m.llm_role == "assistant")
        assert len(assistant) == 1


def test_a_429_holds_the_job_back_in_line_without_using_a_retry(registry, users, runner, faulty):
    simulator, thread_id = faulty
    simulator.push_fault(status=429, retry_after=1)
    updates = follow(registry, users, thread_id)
    assert not [u for u in updates if u["type"] == "error" or u.get("state") == "retrying"]
    assert updates[-1]["type"] == "done"
    assert len(updates[-1]["message"]["body"].split()) == TOKENS
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(updates[-1]["job_id"])
        assert (job.state, job.retry_count) == ("completed", 0)
        first, second = job.attempt_ids
        assert (first.outcome, second.outcome) == ("interrupted", "completed")
        assert "HTTP 429" in first.error_message and "Queued again" in first.error_message
        assert (second.started_at - first.ended_at).total_seconds() >= 0.9  # its Retry-After
        queue = env["llm.generation.queue"].search([("provider_id", "=", job.provider_id.id)])
        held = (queue.throttled_until - first.ended_at).total_seconds()
        assert 0.9 <= held <= 2  # every worker held back for the Retry-After


@pytest.mark.parametrize("fault,text", PERMANENT.values(), ids=PERMANENT.keys())
def test_a_permanent_fault_fails_at_once_with_the_providers_message(
    registry, users, runner, faulty, fault, text
):
    simulator, thread_id = faulty
    simulator.push_fault(**fault)
    updates = follow(registry, users, thread_id)
    assert not [u for u in updates if u.get("state") == "retrying"]
    assert updates[-1]["type"] == "error" and text in updates[-1]["error"]
    if "status" in fault:
        assert f"HTTP {fault['status']}" in updates[-1]["error"]
    assert presented_as_final(updates) == set()
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(updates[-1]["job_id"])
        assert (job.state, job.error_kind, job.retry_count) == ("failed", "permanent", 0)
        assert job.attempt_ids.mapped("outcome") == ["failed"]
        assert job.output_message_id.state != "done"
