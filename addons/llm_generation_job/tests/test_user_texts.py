"""Every text a user can see — a job's error, a reply's error, an attempt's error, the
follower's updates — is a short sentence saying what happened and what happens next, whatever
failed: the provider, the worker's code, the database. The details go to the log."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from addons.llm_generation_job.runner import JobRunner
from core import Registry

from .conftest import make_provider

# What must never reach a person: tracebacks, SQL, driver noise, log-style notes, tokens.
LEAKS = re.compile(
    r"Traceback|\[SQL|\[parameters|sqlalche\.me|UPDATE |SELECT |INSERT |lease_token|"
    r"psycopg|sqlite3|\(retryable|\(permanent|File \""
)
BROKEN_SERVICE = """
import sqlalchemy as sa

from addons.llm_thread.wire.events import TextDelta


class BrokenProvider(models.Model):
    _inherit = "llm.provider"

    service = fields.Selection(selection_add=[("broken", "Broken")])

    def broken_chat(self, messages, model=None, http_client=None, **options):
        yield TextDelta("a partial reply ")
        raise sa.exc.IntegrityError(
            "UPDATE llm_message SET body=%(body)s WHERE lease_token = %(lease_token_1)s",
            {"body": "a partial reply", "lease_token_1": "76c8e1"},
            Exception("constraint failed"),
        )

    def broken_format_messages(self, messages):
        return messages
"""


@pytest.fixture
def texts_registry(make_registry, tmp_path):
    from tests.addon_factory import write_addon

    addon = write_addon(
        tmp_path, "broken_service", depends=["llm_generation_job"], models=BROKEN_SERVICE
    )
    return make_registry(addons_path=[Path("addons").resolve(), tmp_path], addons=[addon])


@pytest.fixture
def job_runner(texts_registry):
    runner = JobRunner(texts_registry, concurrency=4, poll_interval=0.1)
    runner.start()
    yield runner
    runner.stop(timeout=5)


def generate(registry, provider_id, model_id, prompt, name):
    """A queued generation on a new thread: its updates, and every text stored about it."""
    with registry.environment() as env:
        thread = env["llm.thread"].create(
            {"name": name, "provider_id": provider_id, "model_id": model_id}
        )
        updates = list(thread.generate_response(prompt, use_queue=True))
        job = thread.generation_job_ids
        stored = [job.error_message, *job.attempt_ids.mapped("error_message")]
        stored += thread.message_ids.mapped("error")
    shown = [u.get("error") or u.get("message") for u in updates if u["type"] != "message_chunk"]
    return updates, [t for t in stored + shown if isinstance(t, str) and t]


def assert_sentences(texts):
    assert texts
    for text in texts:
        assert not LEAKS.search(text), text
        assert "\n" not in text and len(text) < 400, text


@pytest.mark.parametrize(
    "prompt",
    [
        "[sim:status=500] a",
        "[sim:status=429 retry_after=0] b",
        "[sim:status=400 message=bad_request] c",
        "[sim:status=401] d",
        "[sim:cut_after=3] e",
        "[sim:malformed_after=2] f",
        "[sim:stream_error_after=2 message=overloaded_error] g",
    ],
)
def test_provider_failures_read_as_sentences(texts_registry, job_runner, openai_server, prompt):
    with texts_registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            # No cooldown: each prompt fails every time, and only the texts are looked at.
            {"retry_delay_minutes": 0, "max_concurrent_jobs": 4, "breaker_threshold": 0}
        )
        ids = provider.id, model.id
    updates, texts = generate(texts_registry, *ids, prompt, "provider fault")
    assert_sentences(texts)
    assert updates[-1]["type"] in ("done", "error")


def test_a_bug_or_a_database_error_in_the_worker_reads_as_a_sentence(
    texts_registry, job_runner, caplog
):
    caplog.set_level(logging.ERROR)
    with texts_registry.environment() as env:
        provider = env["llm.provider"].create({"name": "broken", "service": "broken"})
        model = env["llm.model"].create({"name": "m", "provider_id": provider.id, "default": True})
        env["llm.generation.queue"]._get_or_create_queue(provider.id)
        ids = provider.id, model.id
    updates, texts = generate(texts_registry, *ids, "hello", "worker fault")
    assert_sentences(texts)
    assert updates[-1] == {
        "type": "error",
        "error": "The worker failed unexpectedly (IntegrityError); the details are in its log.",
        "job_id": updates[-1]["job_id"],
    }
    assert "UPDATE llm_message" in caplog.text  # the details are in the log


def test_the_follower_says_when_the_database_is_unavailable(db_url, openai_server):
    """Every connection of the caller's pool held elsewhere (a real fault) while it follows
    its job: one status says so, then the reply comes once connections are free again."""
    registry = Registry(
        db_url,
        addons=["llm_generation_job"],
        engine_options={"pool_size": 2, "max_overflow": 0, "pool_timeout": 0.2},
    )
    worker_registry = Registry(db_url, addons=["llm_generation_job"])  # its own connections
    runner = JobRunner(worker_registry, concurrency=1, poll_interval=0.1)

    def hold_every_connection(seconds):
        held = [registry.cursor(readonly=True) for _ in range(2)]  # readers: no write lock
        for cursor in held:
            cursor.execute(sa.text("SELECT 1"))
        threading.Event().wait(seconds)
        for cursor in held:
            cursor.close()

    try:
        with registry.environment() as env:
            provider, model = make_provider(env, api_base=openai_server.url)
            env["llm.generation.queue"]._get_or_create_queue(provider.id)
            thread = env["llm.thread"].create(
                {"name": "t", "provider_id": provider.id, "model_id": model.id}
            )
            stream = thread.generate_response("[sim:first_token_delay=0.5] hi", use_queue=True)
            updates = [next(stream), next(stream)]  # the user's message, then "queued"
            holder = threading.Thread(target=hold_every_connection, args=(1.5,))
            holder.start()
            runner.start()  # the job runs meanwhile, in the worker's connections
            updates += list(stream)
            holder.join()
    finally:
        runner.stop(timeout=5)
        registry.close()
        worker_registry.close()
    waiting = [u for u in updates if "database is unavailable" in (u.get("message") or "")]
    assert waiting == [
        {
            "type": "job_status",
            "job_id": updates[-1]["job_id"],
            "state": "queued",
            "message": "The database is unavailable for the moment (all database connections "
            "are busy); still following the job.",
        }
    ]
    assert updates[-1]["type"] == "done"
