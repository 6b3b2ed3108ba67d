"""Queued generation end to end: a thread's reply produced by a worker's runner in this
process, streamed back with the same update shapes as direct generation."""

import time

import pytest

from addons.llm_generation_job.follow import follow_job
from addons.llm_thread.simulator import reply_text
from core import UserError


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


DONE = {"completed", "failed", "cancelled"}


def job_state(registry, job_id):
    with registry.environment(readonly=True) as env:
        return env["llm.generation.job"].browse(job_id).state


def test_queued_generation_streams_like_direct_mode(registry, runner, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        updates = list(thread.generate_response("Hello, how are you?", use_queue=True))
    kinds = [u["type"] for u in updates]
    assert kinds[0] == "message_create"  # the user message
    assert "job_status" in kinds and kinds[-1] == "done"
    chunks = "".join(u["content"] for u in updates if u["type"] == "message_chunk")
    assert chunks == reply_text("Hello, how are you?", 20)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        replies = thread.message_ids.filtered(lambda m: m.llm_role == "assistant")
        assert len(replies) == 1 and replies.body == chunks and replies.state == "done"
        job = thread.generation_job_ids
        assert job.state == "completed" and job.output_message_id == replies
        assert job.attempt_ids.mapped("outcome") == ["completed"]
        assert replies.completion_tokens == 20


def test_auto_detection_uses_an_enabled_queue(registry, runner, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        list(thread.generate_response("direct, no queue yet"))
        assert not thread.generation_job_ids
        env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
        updates = list(thread.generate_response("now queued"))
        assert any(u["type"] == "job_status" for u in updates)
        assert len(thread.generation_job_ids) == 1


def test_consumer_that_stops_listening_does_not_stop_the_job(registry, runner, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        stream = thread.generate_response("[sim:token_delay=0.01] keep going", use_queue=True)
        next(stream)
        stream.close()
        job_id = thread.generation_job_ids.id
    wait_for(lambda: job_state(registry, job_id) == "completed")


def test_a_job_that_cannot_be_prepared_fails_alone_and_its_claim_goes_on(
    registry, runner, sim_thread
):
    """Jobs claimed together are prepared together; when one cannot be (it names no model,
    and its provider has no default one), it fails alone and the others of that claim run."""
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        thread.model_id.active = False  # named by the thread and its jobs, no default
        jobs = env["llm.generation.job"].create(
            [{"thread_id": thread.id, "generation_inputs": {"prompt": p}} for p in ("a", "b")]
        )
        jobs[1].model_id = False
        for job in jobs:
            job.action_queue()  # one commit: the runner claims both at once
        good, bad = jobs.ids
    wait_for(lambda: {job_state(registry, good), job_state(registry, bad)} <= DONE)
    with registry.environment(readonly=True) as env:
        good_job, bad_job = env["llm.generation.job"].browse([good, bad])
        assert good_job.state == "completed", good_job.error_message
        assert good_job.output_message_id.body == reply_text("a", 20)
        assert good_job.attempt_ids.mapped("outcome") == ["completed"]
        assert bad_job.state == "failed" and bad_job.error_kind == "permanent"
        assert "has no chat model" in bad_job.error_message
        assert len(bad_job.attempt_ids) == 1 and not bad_job.output_message_id


def test_a_busy_thread_refuses_a_second_generation(registry, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        first = thread.generate_response("first", use_queue=True)
        next(first)  # queued; no worker runs here, so it stays queued
        first.close()
        with pytest.raises(UserError, match="already generating a response"):
            next(thread.generate_response("second", use_queue=True))
        with pytest.raises(UserError, match="already generating a response"):
            next(thread.generate_response("direct", use_queue=False))


def test_the_follower_keeps_following_across_a_retry(registry, runner, sim_thread, openai_server):
    """A retryable failure is a 'retrying' status, not the end: the caller's stream goes on
    to the new attempt's reply."""
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        queue = env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
        queue.retry_delay_minutes = 0
    openai_server.push_fault(status=503, retry_after=1)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        updates = list(thread.generate_response("retry me", use_queue=True))
    [retrying] = [u for u in updates if u.get("state") == "retrying"]
    assert retrying["retry_at"] and "HTTP 503 Service Unavailable" in retrying["message"]
    assert "Retrying at" in retrying["message"] and "(attempt 2 of 4)" in retrying["message"]
    assert "(retryable" not in retrying["message"]  # a sentence for people, not a log line
    assert updates[-1]["type"] == "done"
    assert updates[-1]["message"]["body"] == reply_text("retry me", 20)
    assert "error" not in [u["type"] for u in updates]
    with registry.environment(readonly=True) as env:
        job = env["llm.thread"].browse(sim_thread).generation_job_ids
        assert (job.state, job.retry_count, job.error_message) == ("completed", 1, False)
        assert job.attempt_ids.mapped("outcome") == ["failed", "completed"]
        replies = job.thread_id.message_ids.filtered(lambda m: m.llm_role == "assistant")
        assert len(replies) == 1 and replies.state == "done"


def test_the_last_retry_says_the_job_gave_up(registry, runner, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id).write(
            {"retry_delay_minutes": 0}
        )
        job = env["llm.generation.job"].create(
            {
                "thread_id": thread.id,
                "max_retries": 1,
                "generation_inputs": {"prompt": "[sim:status=503 message=overloaded] hi"},
            }
        )
        job.action_queue()
        job_id = job.id
    with registry.environment() as env:
        updates = list(follow_job(env, job_id))
    assert [u["state"] for u in updates if u["type"] == "job_status"].count("retrying") == 1
    assert updates[-1] == {
        "type": "error",
        "error": "Provider 'sim' failed: HTTP 503 Service Unavailable: overloaded. "
        "Gave up after 2 attempts.",
        "job_id": job_id,
    }


def test_permanent_error_fails_at_once_with_the_providers_message(registry, runner, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        updates = list(thread.generate_response("[sim:status=400] bad", use_queue=True))
    assert updates[-1]["type"] == "error"
    with registry.environment(readonly=True) as env:
        job = env["llm.thread"].browse(sim_thread).generation_job_ids
        assert (job.state, job.error_kind, job.retry_count) == ("failed", "permanent", 0)
        assert not job.next_retry_at and "400" in job.error_message


def test_cancel_a_queued_job(registry, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        stream = thread.generate_response("never runs", use_queue=True)
        next(stream)
        stream.close()
        job = thread.generation_job_ids
        job.action_cancel()
        assert job.state == "cancelled" and not job.output_message_id


def test_cancel_does_not_wait_for_a_silent_provider(registry, runner, sim_thread, openai_server):
    """A provider still thinking sends nothing: the worker's read is blocked in the socket, and
    closing the client would not wake it. The cancel shuts the socket down instead."""
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        stream = thread.generate_response("[sim:first_token_delay=60] think hard", use_queue=True)
        for update in stream:
            if update["type"] == "message_create" and update["message"]["llm_role"] == "assistant":
                break
        wait_for(lambda: openai_server.stats()["in_flight"] == 1)
        job = thread.generation_job_ids
        cancelled_at = time.monotonic()
        job.action_cancel()
        env.cr.commit()
        rest = list(stream)
        assert time.monotonic() - cancelled_at < 10  # not the provider's 60 s
    assert rest[-1]["type"] == "cancelled"
    assert job_state(registry, job.id) == "cancelled"
    assert openai_server.wait_idle(timeout=5)["disconnects"] == 1


def test_cancel_a_running_job_keeps_the_partial_reply(registry, runner, sim_thread, openai_server):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        stream = thread.generate_response(
            "[sim:tokens=400 token_delay=0.02] a long one", use_queue=True
        )
        for update in stream:
            if update["type"] == "message_chunk":
                break
        job = thread.generation_job_ids
        job.action_cancel()
        env.cr.commit()
        rest = list(stream)
    assert rest[-1]["type"] == "cancelled"
    with registry.environment(readonly=True) as env:
        job = env["llm.thread"].browse(sim_thread).generation_job_ids
        assert job.state == "cancelled"
        reply = job.output_message_id
        assert reply.state == "cancelled" and 0 < len(reply.body) < len(
            reply_text("[sim:tokens=400 token_delay=0.02] a long one", 400)
        )
    openai_server.wait_idle(timeout=5)
    assert openai_server.stats()["disconnects"] >= 1
