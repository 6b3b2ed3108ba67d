"""Access to threads, messages and providers."""

import pytest

from core import AccessError


@pytest.fixture
def people(make_registry):
    registry = make_registry(addons=["llm_thread"])
    with registry.environment() as env:
        user_group = env.ref("base.group_user").id
        alice = env["res.users"].create({"name": "A", "login": "a", "groups_id": [user_group]})
        bob = env["res.users"].create({"name": "B", "login": "b", "groups_id": [user_group]})
        boss = env["res.users"].create({"name": "M", "login": "m", "groups_id": [
            env.ref("llm_thread.group_llm_manager").id]})
        provider = env["llm.provider"].create(
            {"name": "p", "service": "openai", "api_base": "http://127.0.0.1:9", "api_key": "k"})
        threads = env["llm.thread"].create([
            {"name": "alice's", "user_id": alice.id, "provider_id": provider.id},
            {"name": "bob's", "user_id": bob.id, "provider_id": provider.id},
        ])
        threads[1].message_post(body="bob's secret", llm_role="user", author_id=bob.id)
        return registry, {"alice": alice.id, "bob": bob.id, "boss": boss.id,
                          "bob_thread": threads[1].id, "provider": provider.id}


def test_a_user_cannot_read_another_users_thread_or_messages(people):
    registry, ids = people
    with registry.environment(user=ids["alice"]) as env:
        assert env["llm.thread"].search([]).mapped("name") == ["alice's"]
        assert env["llm.message"].search([]).mapped("body") == []
        with pytest.raises(AccessError):
            env["llm.thread"].browse(ids["bob_thread"]).name
        with pytest.raises(AccessError):
            env["llm.thread"].browse(ids["bob_thread"]).message_post(body="hi")


def test_managers_see_all_threads(people):
    registry, ids = people
    with registry.environment(user=ids["boss"]) as env:
        assert sorted(env["llm.thread"].search([]).mapped("name")) == ["alice's", "bob's"]
        assert env["llm.message"].search([]).mapped("body") == ["bob's secret"]


def test_only_managers_read_provider_configuration(people):
    registry, ids = people
    with (
        registry.environment(user=ids["alice"]) as env,
        pytest.raises(AccessError, match="'llm.provider'"),
    ):
        env["llm.provider"].browse(ids["provider"]).api_base
    with registry.environment(user=ids["boss"]) as env:
        assert env["llm.provider"].browse(ids["provider"]).api_base == "http://127.0.0.1:9"
