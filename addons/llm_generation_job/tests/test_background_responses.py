"""Jobs run as OpenAI background responses, on both databases, against the loopback
simulator: streamed into the job like any reply, each piece logged with the response's
cursor; a worker SIGKILLed midway is replaced by another that re-attaches to the same
response after the last cursor logged (generated once, paid once); a cancelled job's response
is cancelled at the provider."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from addons.llm_thread.simulator import reply_text

from .conftest import make_provider
from .test_ordinary_user import wait_for_live_worker

TOKENS = 60


@pytest.fixture
def background(registry, users, make_simulator):
    """``background(token_delay)``: a simulator, a provider on it whose queue runs its jobs as
    background responses, and a thread of Alice's; returns (server, provider id, thread id)."""

    def make(token_delay: float = 0.0):
        server = make_simulator("openai", tokens=TOKENS, token_delay=token_delay)
        with registry.environment() as env:
            provider, model = make_provider(env, api_base=server.url)
            env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
                {"execution_mode": "background"}
            )
            thread = env["llm.thread"].create(
                {
                    "name": "Alice's chat",
                    "user_id": users["alice"],
                    "provider_id": provider.id,
                    "model_id": model.id,
                }
            )
            return server, provider.id, thread.id

    return make


def queue_job(registry, user_id: int, thread_id: int, prompt: str) -> int:
    with registry.environment(user=user_id) as env:
        job = env["llm.generation.job"].create(
            {"thread_id": thread_id, "generation_inputs": {"prompt": prompt}}
        )
        job.action_queue()
        assert job.execution_mode == "background"
        return job.id


def simulated_responses(server) -> dict:
    return httpx.get(f"{server.root_url}/_sim/responses", timeout=5).json()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


def test_a_background_job_streams_with_cursors(registry, background, users, runner):
    server, _, thread_id = background()
    prompt = "Tell me about durable queues"
    job_id = queue_job(registry, users["alice"], thread_id, prompt)
    with registry.environment(user=users["alice"]) as env:
        job = env["llm.generation.job"].browse(job_id)
        while job.state in ("queued", "running"):
            job.check_status(wait=1)
        assert job.state == "completed"
        assert job.output_message_id.body == reply_text(prompt, TOKENS)
        chunks = job.chunk_ids
        assert "".join(chunks.mapped("content")) == job.output_message_id.body
        assert all(chunk.cursor > 0 for chunk in chunks)
        assert chunks.mapped("cursor") == sorted(chunks.mapped("cursor"))
        provider_job = job._provider_job()
        assert provider_job["kind"] == "response" and provider_job["id"].startswith("resp_")
    [(response_id, seen)] = simulated_responses(server)["responses"].items()
    assert response_id == provider_job["id"]
    assert seen["status"] == "completed" and seen["generations"] == 1


def test_cancelling_a_background_job_cancels_its_response(registry, background, users, runner):
    server, _, thread_id = background(token_delay=0.05)
    job_id = queue_job(registry, users["alice"], thread_id, "A long answer, please")

    def streaming():
        with registry.environment(readonly=True) as env:
            return env["llm.generation.job"].browse(job_id).chunk_ids

    wait_for(streaming, 20, "the reply never began")
    with registry.environment(user=users["alice"]) as env:
        env["llm.generation.job"].browse(job_id).action_cancel()

    def cancelled_at_provider():
        responses = simulated_responses(server)["responses"]
        return [seen for seen in responses.values() if seen["status"] == "cancelled"]

    wait_for(cancelled_at_provider, 10, "the response was not cancelled at the provider")
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(job_id)
        assert job.state == "cancelled" and job.output_message_id.state == "cancelled"


@pytest.mark.slow
def test_a_killed_workers_response_is_resumed_not_generated_again(
    registry, background, users, start_workers
):
    """The worker streaming a background response is SIGKILLed midway; another worker takes
    the job over and re-attaches to the same response after the last cursor the first one
    logged: the reply is whole, said once, and the provider generated it once."""
    server, provider_id, thread_id = background(token_delay=0.08)  # about 5 s
    prompt = "Explain leases, slowly"
    [first] = start_workers(1, lease=3)
    wait_for_live_worker(registry, provider_id)
    job_id = queue_job(registry, users["alice"], thread_id, prompt)

    def logged() -> int:
        with registry.environment(readonly=True) as env:
            return len(env["llm.generation.job"].browse(job_id).chunk_ids)

    wait_for(lambda: logged() >= 5, 30, "the first worker never streamed")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_death = logged()
    start_workers(1, lease=3)

    def finished():
        with registry.environment(readonly=True) as env:
            job = env["llm.generation.job"].browse(job_id)
            return job.state not in ("queued", "running")

    wait_for(finished, 60, "the job did not finish after its worker died")
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(job_id)
        assert job.state == "completed", job.error_message
        replies = env["llm.message"].search(
            [("thread_id", "=", thread_id), ("llm_role", "=", "assistant")]
        )
        assert replies == job.output_message_id
        assert replies.body == reply_text(prompt, TOKENS)  # whole, nothing said twice
        assert [a.outcome for a in job.attempt_ids] == ["lost", "completed"]
        chunks = job.chunk_ids
        assert "restart" not in chunks.mapped("kind")  # the same reply went on
        assert "".join(chunks.mapped("content")) == replies.body
        resumed = chunks.filtered(lambda chunk: chunk.attempt == 2)
        assert resumed and len(chunks) - len(resumed) >= at_death - 1
        assert min(resumed.mapped("cursor")) > max((chunks - resumed).mapped("cursor"))
    seen = simulated_responses(server)
    assert len(seen["responses"]) == 1  # one response, created once
    [response] = seen["responses"].values()
    assert response["generations"] == 1 and response["status"] == "completed"
