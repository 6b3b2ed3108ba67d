"""The contract's usage (shared/seeds/001) as an ordinary user (``base.group_user``) meets it:
workers run in other processes, started from another folder, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time

import pytest

from addons.llm_thread.simulator import reply_text

from .conftest import make_provider

pytestmark = pytest.mark.slow


@pytest.fixture
def alice_thread(registry, users, openai_server):
    """Alice's thread on a provider served by the simulator, with an enabled queue."""
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id)
        thread = env["llm.thread"].create(
            {
                "name": "Alice's chat",
                "user_id": users["alice"],
                "provider_id": provider.id,
                "model_id": model.id,
            }
        )
        return {
            "thread": thread.id,
            "provider": provider.id,
            "model": model.id,
            "alice": users["alice"],
        }


def wait_for_live_worker(registry, provider_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        with registry.environment(readonly=True) as env:
            if env["llm.generation.worker"].live_count(provider_id):
                return
        assert time.monotonic() < deadline, "no worker came alive"
        time.sleep(0.1)


def test_the_contracts_usage_as_an_ordinary_user(registry, alice_thread, start_workers, caplog):
    """Defect 7: as an ordinary user, generate_response() raised AccessError on llm.provider
    and the check_status loop returned False with a warning at every turn."""
    start_workers(1)
    wait_for_live_worker(registry, alice_thread["provider"])
    thread_id, provider_id = alice_thread["thread"], alice_thread["provider"]
    model_id = alice_thread["model"]
    caplog.set_level(logging.WARNING)
    with registry.environment(user=alice_thread["alice"]) as env:
        # Direct generation (backward compatible)
        thread = env["llm.thread"].browse(thread_id)
        direct = list(thread.generate_response("Hello, how are you?", use_queue=False))

        # Queued generation
        queued = list(thread.generate_response("Hello, how are you?", use_queue=True))

        # Auto-detection (recommended)
        auto = list(thread.generate_response("Hello, how are you?"))

        # Get or create queue for a provider; check queue health
        queue = env["llm.generation.queue"]._get_or_create_queue(provider_id)
        stats = queue.get_queue_stats()
        info = thread.provider_id.get_generation_queue_info()

        # Create a job
        job = env["llm.generation.job"].create(
            {
                "thread_id": thread_id,
                "provider_id": provider_id,
                "model_id": model_id,
                "generation_inputs": {"prompt": "[sim:tokens=30 token_delay=0.05] Hello world"},
            }
        )

        # Queue and start the job
        job.action_queue()

        # Monitor job status
        statuses = []
        while job.state in ["queued", "running"]:
            status = job.check_status()
            statuses.append(status)

        assert direct[-1]["type"] == "done" and queued[-1]["type"] == "done"
        assert auto[0] == {
            "type": "generation_mode",
            "mode": "queued",
            "reason": ("provider 'sim' has an enabled queue served by 1 live worker"),
        }
        assert auto[-1]["type"] == "done"
        assert stats["job_counts"]["completed"] == 2 and stats["queue_health"] == "healthy"
        assert info["supports_queue"] and info["live_workers"] == 1
        assert job.state == "completed"
        assert job.output_message_id.body == reply_text(
            "[sim:tokens=30 token_delay=0.05] Hello world", 30
        )
        assert {"state": "running"} in [
            {"state": s["state"]} for s in statuses if isinstance(s, dict)
        ]
        replies = thread.message_ids.filtered(lambda m: m.llm_role == "assistant")
        assert len(replies) == 4 and set(replies.mapped("state")) == {"done"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_live_worker_is_said_and_the_follower_keeps_following(
    registry, alice_thread, start_workers
):
    """Defect 9: with no worker, a queued generation waited on "Queued (position 1)" for
    ever, and use_queue=None queued for good once a queue existed."""
    with registry.environment(user=alice_thread["alice"]) as env:
        thread = env["llm.thread"].browse(alice_thread["thread"])
        auto = list(thread.generate_response("Anyone there?"))
        assert auto[0]["mode"] == "direct"
        assert "no worker is running for the queue of provider 'sim'" in auto[0]["reason"]
        assert "llmjobs worker" in auto[0]["reason"] and auto[-1]["type"] == "done"

        stream = thread.generate_response("Queue it anyway", use_queue=True)
        asked = time.monotonic()
        first_status = next(u for u in stream if u["type"] == "job_status")
        assert time.monotonic() - asked < 5
        assert (first_status["state"], first_status["workers"]) == ("queued", 0)
        assert "no worker is running for this queue" in first_status["message"]
        assert "`llmjobs worker`" in first_status["message"]
        start_workers(1)
        rest = list(stream)  # the follower kept following: the job runs once a worker does
    statuses = [u for u in rest if u["type"] == "job_status"]
    assert statuses[-1]["state"] == "running" or statuses[-1]["workers"] == 1  # it came
    assert rest[-1]["type"] == "done"
    assert rest[-1]["message"]["body"] == reply_text("Queue it anyway", 20)
