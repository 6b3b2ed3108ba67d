"""Who may create and change a job: an ordinary user only on their own threads, with the
thread's provider; job state, lease, timings and counters only through the job's actions;
retries and priorities above the default for managers."""

import pytest

from core import AccessError, UserError, ValidationError

from .conftest import make_provider


@pytest.fixture
def setting(registry, users):
    """Alice's and Bob's threads on one provider, a second provider, and Bob's message."""
    with registry.environment() as env:
        provider, model = make_provider(env)
        other, other_model = make_provider(env, name="other")
        threads = env["llm.thread"].create(
            [
                {
                    "name": "alice's",
                    "user_id": users["alice"],
                    "provider_id": provider.id,
                    "model_id": model.id,
                },
                {
                    "name": "bob's",
                    "user_id": users["bob"],
                    "provider_id": provider.id,
                    "model_id": model.id,
                },
            ]
        )
        bob_message = threads[1].message_post(
            body="bob's words", llm_role="user", author_id=users["bob"]
        )
        return {
            **users,
            "provider": provider.id,
            "model": model.id,
            "other": other.id,
            "other_model": other_model.id,
            "alice_thread": threads[0].id,
            "bob_thread": threads[1].id,
            "bob_message": bob_message.id,
        }


def test_a_user_cannot_queue_a_job_on_another_users_thread(registry, setting):
    """Defect 1: passing provider_id and model_id let a user post into a thread not theirs."""
    with registry.environment(user=setting["alice"]) as env:
        jobs = env["llm.generation.job"]
        with pytest.raises(AccessError):
            jobs.create(
                {
                    "thread_id": setting["bob_thread"],
                    "provider_id": setting["provider"],
                    "model_id": setting["model"],
                    "generation_inputs": {"prompt": "read me bob's thread"},
                }
            )
        with pytest.raises(AccessError):
            jobs.create(
                {"thread_id": setting["alice_thread"], "input_message_id": setting["bob_message"]}
            )
    with registry.environment() as env:
        assert not env["llm.generation.job"].search([])


def test_a_job_runs_on_its_threads_provider(registry, setting):
    with registry.environment(user=setting["alice"]) as env:
        jobs = env["llm.generation.job"]
        with pytest.raises(ValidationError, match="'provider_id' .* must be its thread's"):
            jobs.create({"thread_id": setting["alice_thread"], "provider_id": setting["other"]})
        with pytest.raises(ValidationError, match="'model_id' .* must be a model of its"):
            jobs.create({"thread_id": setting["alice_thread"], "model_id": setting["other_model"]})
        job = jobs.create(
            {
                "thread_id": setting["alice_thread"],
                "provider_id": setting["provider"],
                "model_id": setting["model"],
            }
        )
        assert job.provider_id.id == setting["provider"]
        with pytest.raises(AccessError, match="'thread_id' .* cannot change"):
            job.write({"thread_id": setting["bob_thread"]})
        with pytest.raises(ValidationError, match="'model_id'"):
            job.write({"model_id": setting["other_model"]})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", "completed"),
        ("retry_count", 0),
        ("queued_at", False),
        ("started_at", False),
        ("completed_at", False),
        ("next_retry_at", False),
        ("error_message", "x"),
        ("lease_token", "forged"),
        ("lease_expires_at", False),
        ("cancel_requested", True),
        ("output_message_id", False),
        ("external_job_id", "x"),
    ],
)
def test_nobody_writes_what_the_job_store_keeps(registry, setting, field, value):
    """Defect 2: a user could mark their own job completed or reset its retry count."""
    with registry.environment(user=setting["alice"]) as env:
        job = env["llm.generation.job"].create({"thread_id": setting["alice_thread"]})
        job.action_queue()
        with pytest.raises(AccessError, match=f"Field '{field}' of a generation job cannot"):
            job.write({field: value})
        with pytest.raises(AccessError, match=f"Field '{field}'"):
            env["llm.generation.job"].create({"thread_id": setting["alice_thread"], field: value})
        job_id = job.id
    with registry.environment() as env:  # not even the superuser, outside the store
        job = env["llm.generation.job"].browse(job_id)
        with pytest.raises(AccessError, match=f"Field '{field}'"):
            job.write({field: value})
        assert job.state == "queued"


def test_retries_and_high_priorities_are_for_managers(registry, setting):
    with registry.environment(user=setting["alice"]) as env:
        job = env["llm.generation.job"].create({"thread_id": setting["alice_thread"]})
        with pytest.raises(AccessError, match="Only LLM managers may set 'max_retries'"):
            job.write({"max_retries": 100})
        with pytest.raises(AccessError, match="'priority' above 0"):
            job.write({"priority": 10})
        with pytest.raises(AccessError, match="'priority' above 0"):
            env["llm.generation.job"].create({"thread_id": setting["alice_thread"], "priority": 5})
        job.write({"priority": -3})  # stepping back is anyone's right
        assert (job.priority, job.max_retries) == (-3, 3)
        job_id = job.id
    with registry.environment(user=setting["manager"]) as env:
        job = env["llm.generation.job"].browse(job_id)
        job.write({"priority": 10, "max_retries": 5})
        assert (job.priority, job.max_retries) == (10, 5)


def test_completing_failing_or_starting_by_hand_is_for_managers(registry, setting):
    with registry.environment(user=setting["alice"]) as env:
        job = env["llm.generation.job"].create({"thread_id": setting["alice_thread"]})
        job.action_queue()
        for action in ("action_complete", "action_fail", "action_start"):
            with pytest.raises(AccessError, match="Only LLM managers may"):
                getattr(job, action)()
        assert job.state == "queued"
        job.action_cancel()  # cancelling their own job is theirs
        assert job.state == "cancelled"
        job_id = job.id
    with registry.environment(user=setting["manager"]) as env:
        job = env["llm.generation.job"].browse(job_id)
        with pytest.raises(UserError, match="it is cancelled"):
            job.action_fail("no")


def test_a_user_cannot_act_on_another_users_job(registry, setting):
    with registry.environment(user=setting["bob"]) as env:
        job = env["llm.generation.job"].create({"thread_id": setting["bob_thread"]})
        job.action_queue()
        job_id = job.id
    with registry.environment(user=setting["alice"]) as env:
        job = env["llm.generation.job"].browse(job_id)
        for action in ("action_cancel", "action_retry", "check_status"):
            with pytest.raises(AccessError):
                getattr(job, action)()
    with registry.environment() as env:
        assert env["llm.generation.job"].browse(job_id).state == "queued"
