"""Users create and see only their own jobs; managers see all jobs and configure queues."""

import pytest

from core import AccessError

from .conftest import make_provider


@pytest.fixture
def people(registry):
    with registry.environment() as env:
        user_group = env.ref("base.group_user").id
        alice = env["res.users"].create({"name": "A", "login": "a", "groups_id": [user_group]})
        bob = env["res.users"].create({"name": "B", "login": "b", "groups_id": [user_group]})
        boss = env["res.users"].create(
            {"name": "M", "login": "m", "groups_id": [env.ref("llm_thread.group_llm_manager").id]}
        )
        provider, model = make_provider(env)
        threads = env["llm.thread"].create(
            [
                {
                    "name": "a",
                    "user_id": alice.id,
                    "provider_id": provider.id,
                    "model_id": model.id,
                },
                {"name": "b", "user_id": bob.id, "provider_id": provider.id, "model_id": model.id},
            ]
        )
        env["llm.generation.job"].create(
            {"thread_id": threads[1].id, "user_id": bob.id}
        ).action_queue()
        return {
            "alice": alice.id,
            "boss": boss.id,
            "alice_thread": threads[0].id,
            "bob_thread": threads[1].id,
            "provider": provider.id,
        }


def test_users_create_and_see_only_their_own_jobs(registry, people):
    with registry.environment(user=people["alice"]) as env:
        assert not env["llm.generation.job"].search([])
        mine = env["llm.generation.job"].create({"thread_id": people["alice_thread"]})
        mine.action_queue()
        assert env["llm.generation.job"].search([]) == mine
        with pytest.raises(AccessError):
            env["llm.generation.job"].create({"thread_id": people["bob_thread"]})
        bobs = env["llm.generation.job"].sudo().search([("user_id", "!=", people["alice"])])
        with pytest.raises(AccessError):
            bobs.with_user(people["alice"]).action_cancel()
        assert bobs.state == "queued"


def test_managers_see_all_jobs_and_configure_queues(registry, people):
    with registry.environment(user=people["alice"]) as env:
        queue = env["llm.generation.queue"].search([])
        assert queue.max_concurrent_jobs == 5  # users may read queues
        with pytest.raises(AccessError):
            queue.write({"max_concurrent_jobs": 50})
    with registry.environment(user=people["boss"]) as env:
        assert len(env["llm.generation.job"].search([])) == 1
        queue = env["llm.generation.queue"].search([])
        queue.write({"max_concurrent_jobs": 50})
        assert queue.action_clear_queue() == 1
