"""Inputs checked before anything is written, the attempt deadline next to the per-read
timeout, and ``thread.generate()``, the name seed 001 promises keeps working."""

import time

import pytest

from core import ValidationError


def message_count(registry, thread_id):
    with registry.environment(readonly=True) as env:
        return env["llm.message"].search_count([("thread_id", "=", thread_id)])


@pytest.mark.parametrize("use_queue", [True, False])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": object()}, "Generation option 'temperature' must be JSON data"),
        ({"temperature": float("nan")}, "'temperature' must be JSON data .*no NaN"),
        ({"model": "another"}, "Generation option 'model' is set by the thread itself"),
        ({"stream": False}, "'stream' is set by the thread itself"),
    ],
)
def test_options_are_checked_before_the_user_message_is_posted(
    registry, sim_thread, use_queue, options, message
):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        with pytest.raises(ValidationError, match=message):
            next(thread.generate_response("hello", use_queue=use_queue, **options))
    assert message_count(registry, sim_thread) == 0
    with registry.environment(readonly=True) as env:
        assert not env["llm.thread"].browse(sim_thread).generation_job_ids


def test_job_inputs_are_checked_when_written(env, thread):
    jobs = env["llm.generation.job"]
    with pytest.raises(ValidationError, match="Generation option 'messages' is set by the"):
        jobs.create({"thread_id": thread.id, "generation_inputs": {"options": {"messages": []}}})
    with pytest.raises(ValidationError, match="'options' of a generation job's inputs are a dict"):
        jobs.create({"thread_id": thread.id, "generation_inputs": {"options": ["x"]}})
    with pytest.raises(ValidationError, match="'generation_inputs' of a generation job is a dict"):
        jobs.create({"thread_id": thread.id, "generation_inputs": "hello"})
    job = jobs.create({"thread_id": thread.id, "generation_inputs": {"options": {"seed": 7}}})
    with pytest.raises(ValidationError, match="must be JSON data"):
        job.write({"generation_inputs": {"options": {"seed": {1, 2}}}})


def test_an_attempt_has_a_deadline_beyond_the_per_read_timeout(registry, runner, sim_thread):
    """A reply trickling one token every 1.5 s never trips a 2 s read timeout; the queue's
    attempt deadline (3 s) stops it, retryably, and says why."""
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        thread.provider_id.timeout = 2
        env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id).write(
            {"attempt_deadline_seconds": 3, "auto_retry_failed": False}
        )
    started = time.monotonic()
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        updates = list(
            thread.generate_response("[sim:tokens=30 token_delay=1.5] slow", use_queue=True)
        )
    assert time.monotonic() - started < 8  # not the 45 s of the whole reply
    assert updates[-1]["type"] == "error"
    assert updates[-1]["error"] == (
        "The reply took longer than its queue allows (3 s). Not retried: its queue does not "
        "retry automatically (retry it by hand)."
    )
    with registry.environment(readonly=True) as env:
        job = env["llm.thread"].browse(sim_thread).generation_job_ids
        assert (job.state, job.error_kind) == ("failed", "retryable")
        reply = job.output_message_id
        assert reply.state == "error" and 0 < len(reply.body.split()) < 30  # kept, marked


def test_thread_generate_is_direct_generation(registry, runner, sim_thread):
    """Seed 001: existing code calling thread.generate() keeps working, and it is not queued
    even when a queue and a live worker could take it."""
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        env["llm.generation.queue"]._get_or_create_queue(thread.provider_id.id)
        assert thread.provider_id.get_generation_queue_info()["live_workers"] == 1
        updates = list(thread.generate("Hello, how are you?"))
        assert updates[-1]["type"] == "done"
        assert "job_status" not in [u["type"] for u in updates]
        assert not thread.generation_job_ids
