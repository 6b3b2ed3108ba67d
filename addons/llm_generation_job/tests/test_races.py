"""Races the job store settles, each run 50 times on both databases: two status checks of a
provider-side job at once, a lease taken over while its attempt prepares, a worker stopped
while it claims."""

from __future__ import annotations

import datetime as dt
import random
import threading
from pathlib import Path

import pytest

from addons.llm_generation_job.execution import run_attempt
from addons.llm_generation_job.runner import JobRunner
from addons.llm_generation_job.store import JobStore
from core import Registry

from .conftest import make_provider
from .my_api_server import MyApiServer

ROUNDS = 50
SEED_ADDONS = Path(__file__).parent / "addons"


def together(*actions):
    """Run the actions in threads released at the same moment; re-raise their errors."""
    barrier = threading.Barrier(len(actions))
    errors: list[BaseException] = []

    def run(action):
        try:
            barrier.wait()
            action()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]


def assistant_replies(env, thread_id):
    return env["llm.message"].search(
        [("thread_id", "=", thread_id), ("llm_role", "=", "assistant")]
    )


@pytest.fixture
def second_registry(db_url):
    """Another registry on the test database: its own connections, as another process has."""
    registries = []

    def make(**options):
        registry = Registry(db_url, **options)
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        registry.close()


def test_two_status_checks_at_once_apply_the_result_once(make_registry, second_registry):
    """Defect 3: the user's check_status loop and the status cron both posted the reply."""
    options = {
        "addons_path": [Path("addons").resolve(), SEED_ADDONS],
        "addons": ["llm_seed_provider"],
    }
    first, second = make_registry(**options), second_registry(**options)
    with MyApiServer() as api:
        with first.environment() as env:
            provider = env["llm.provider"].create(
                {"name": "my-api", "service": "openai", "api_base": api.url, "api_key": "k"}
            )
            env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
                {"max_concurrent_jobs": 1}
            )
        for round_number in range(ROUNDS):
            with first.environment() as env:
                thread = env["llm.thread"].create(
                    {"name": f"t{round_number}", "provider_id": provider.id}
                )
                job = env["llm.generation.job"].create(
                    {"thread_id": thread.id, "generation_inputs": {"prompt": "Hi", "polls": 1}}
                )
                job.action_queue()
                assert env["llm.generation.queue"]._process_provider_queue(provider.id) == 1
                job_id, thread_id = job.id, thread.id

            def check(registry, job_id=job_id):
                with registry.environment() as env:
                    env["llm.generation.job"].browse(job_id).check_status(wait=0)

            together(lambda: check(first), lambda: check(second))
            with first.environment(readonly=True) as env:
                job = env["llm.generation.job"].browse(job_id)
                replies = assistant_replies(env, thread_id)
                assert job.state == "completed"
                assert len(replies) == 1, f"round {round_number}: {len(replies)} replies"
                assert job.output_message_id == replies


def test_a_lease_taken_over_while_its_attempt_prepares_posts_one_reply(
    registry, second_registry, openai_server
):
    """Defect 3: an attempt whose lease was taken over committed the empty reply it had just
    created, leaving threads with two or three assistant messages."""
    other = second_registry(addons=["llm_generation_job"])
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    for round_number in range(ROUNDS):
        with registry.environment() as env:
            thread = env["llm.thread"].create(
                {"name": f"t{round_number}", "provider_id": provider.id, "model_id": model.id}
            )
            job = env["llm.generation.job"].create(
                {"thread_id": thread.id, "generation_inputs": {"prompt": "hello"}}
            )
            job.action_queue()
            [stale] = JobStore(env).claim(provider.id, "stalled-worker")
            job.write_where([], {"lease_expires_at": past})  # it stalled past its lease
            job_id, thread_id = job.id, thread.id
        outcomes = []

        def stalled_attempt_wakes_up(stale=stale, outcomes=outcomes):
            outcomes.append(run_attempt(registry, stale))

        def another_worker_takes_over(outcomes=outcomes):
            with other.environment() as env:
                JobStore(env).requeue_expired()
            with other.environment() as env:
                leases = JobStore(env).claim(provider.id, "live-worker")
            outcomes.extend(run_attempt(other, lease) for lease in leases)

        together(stalled_attempt_wakes_up, another_worker_takes_over)
        with registry.environment(readonly=True) as env:
            job = env["llm.generation.job"].browse(job_id)
            replies = assistant_replies(env, thread_id)
            assert len(replies) == 1, f"round {round_number}: {len(replies)} replies"
            assert (job.state, job.output_message_id) == ("completed", replies)
            assert replies.state == "done" and replies.body
            assert sorted(outcomes) in (["completed"], ["completed", "lost"]), outcomes


def test_a_worker_stopped_while_it_claims_strands_no_job(registry, openai_server):
    """Defect 8: a stop during a claim could take a job, fail to submit it and leave it
    running until its lease expired, one retry lost."""
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id)
        threads = env["llm.thread"].create(
            [{"name": f"t{n}", "provider_id": provider.id, "model_id": model.id} for n in range(3)]
        )
        jobs = env["llm.generation.job"].create(
            [
                {
                    "thread_id": t.id,
                    "generation_inputs": {"prompt": "[sim:first_token_delay=0.3] q"},
                }
                for t in threads
            ]
        )
        for job in jobs:
            job.action_queue()
        job_ids = jobs.ids
    rng = random.Random(7)
    for round_number in range(ROUNDS):
        runner = JobRunner(registry, concurrency=2, poll_interval=0.05)
        runner.start()
        threading.Event().wait(rng.uniform(0, 0.03))  # stop at a random point of the claim
        runner.stop(timeout=0)
        with registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"].browse(job_ids)
            assert "running" not in jobs.mapped("state"), f"round {round_number}"
            assert set(jobs.mapped("retry_count")) == {0}
            attempts = jobs.mapped("attempt_ids")
            assert set(attempts.mapped("outcome")) <= {"interrupted", "completed"}
    with registry.environment(readonly=True) as env:
        workers = env["llm.generation.worker"].search([])
        assert len(workers) == ROUNDS and not workers.filtered("is_live")
    openai_server.wait_idle(timeout=10)
