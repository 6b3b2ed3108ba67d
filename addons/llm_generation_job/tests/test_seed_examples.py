"""The contract's examples (shared/seeds/001), run as written: only ``self.env`` became the
test's ``env``."""

from pathlib import Path

import pytest

from .my_api_server import MyApiServer

SEED_ADDONS = Path(__file__).parent / "addons"


def test_usage_examples(registry, runner, sim_thread):
    with registry.environment() as env:
        thread_id = sim_thread
        provider_id = env["llm.thread"].browse(thread_id).provider_id.id
        model_id = env["llm.thread"].browse(thread_id).model_id.id

        # Direct generation (backward compatible)
        thread = env["llm.thread"].browse(thread_id)
        direct = list(thread.generate_response("Hello, how are you?", use_queue=False))

        # Queued generation
        queued = list(thread.generate_response("Hello, how are you?", use_queue=True))

        # Auto-detection (recommended)
        auto = list(thread.generate_response("Hello, how are you?"))

        # Get or create queue for a provider
        queue = env["llm.generation.queue"]._get_or_create_queue(provider_id)
        provider = env["llm.provider"].browse(provider_id)

        # Process pending jobs
        processed_count = queue._process_provider_queue(provider)

        # Check queue health
        stats = queue.get_queue_stats()

        # Create a job
        job = env["llm.generation.job"].create(
            {
                "thread_id": thread_id,
                "provider_id": provider_id,
                "model_id": model_id,
                "generation_inputs": {"prompt": "Hello world"},
            }
        )

        # Queue and start the job
        job.action_queue()

        # Monitor job status
        seen = []
        while job.state in ["queued", "running"]:
            status = job.check_status()
            seen.append(job.state)

        assert direct[-1]["type"] == "done" and queued[-1]["type"] == "done"
        assert any(u["type"] == "job_status" for u in auto)  # the queue exists: queued
        assert processed_count == 0  # the runner had already taken every job
        assert stats["job_counts"]["completed"] == 2
        assert job.state == "completed" and job.output_message_id.body
        assert status is False or isinstance(status, dict)
        assert "Hello world" not in job.output_message_id.body  # a reply, not an echo


@pytest.fixture
def seed_registry(make_registry):
    return make_registry(
        addons_path=[Path("addons").resolve(), SEED_ADDONS], addons=["llm_seed_provider"]
    )


def make_seed_thread(registry, api_base):
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "my-api", "service": "openai", "api_base": api_base, "api_key": "k"}
        )
        thread = env["llm.thread"].create({"name": "Async", "provider_id": provider.id})
        return thread.id, provider.id


def test_provider_implementation_example(seed_registry):
    with MyApiServer() as api:
        thread_id, provider_id = make_seed_thread(seed_registry, api.url)
        with seed_registry.environment() as env:
            job = env["llm.generation.job"].create(
                {"thread_id": thread_id, "generation_inputs": {"prompt": "Hi", "polls": 2}}
            )
            job.action_queue()
            assert env["llm.generation.queue"]._process_provider_queue(provider_id) == 1
            assert job.state == "running" and job.external_job_id == "ext-1"
            assert not job.lease_token  # the provider has the job now, not a worker
            assert job.provider_id.get_generation_queue_info()["supports_streaming"] is False
            env["llm.generation.queue"]._check_job_statuses()  # the status cron: poll 1
            assert job.state == "running"
            env["llm.generation.queue"]._check_job_statuses()  # poll 2: done
            assert job.state == "completed"
            assert job.output_message_id.body == "Reply to: Hi"
            assert job.output_message_id.llm_role == "assistant"
            env["llm.generation.queue"]._check_job_statuses()  # nothing left to do
            replies = job.thread_id.message_ids.filtered(lambda m: m.llm_role == "assistant")
            assert len(replies) == 1


def test_provider_failure_and_cancellation(seed_registry):
    with MyApiServer() as api:
        thread_id, provider_id = make_seed_thread(seed_registry, api.url)
        with seed_registry.environment() as env:
            jobs = env["llm.generation.job"].create(
                [
                    {
                        "thread_id": thread_id,
                        "generation_inputs": {"prompt": "please fail", "polls": 1},
                    },
                    {"thread_id": thread_id, "generation_inputs": {"prompt": "long", "polls": 99}},
                ]
            )
            for job in jobs:
                job.action_queue()
            env["llm.generation.queue"]._process_provider_queue(provider_id)
            env["llm.generation.queue"]._check_job_statuses()
            failed, running = jobs
            assert failed.state == "failed" and failed.error_message == "the model refused"
            running.action_cancel()
            assert running.state == "cancelled"
            assert api.jobs[running.external_job_id]["cancelled"] is True
