"""Access to threads, messages and providers; the API key stays secret."""

import logging

import pytest

from core import AccessError

KEY = "sk-leaky-secret-987"


@pytest.fixture
def people(registry, make_simulator):
    """Alice and Bob (users) with a thread each, a manager, and a provider whose simulator
    requires ``KEY``."""
    server = make_simulator("openai", api_key=KEY)
    with registry.environment() as env:
        user_group = env.ref("base.group_user").id
        alice = env["res.users"].create({"name": "A", "login": "a", "groups_id": [user_group]})
        bob = env["res.users"].create({"name": "B", "login": "b", "groups_id": [user_group]})
        boss = env["res.users"].create(
            {"name": "M", "login": "m", "groups_id": [env.ref("llm_thread.group_llm_manager").id]}
        )
        provider = env["llm.provider"].create(
            {"name": "p", "service": "openai", "api_base": server.url, "api_key": KEY}
        )
        env["llm.model"].create({"name": "m", "provider_id": provider.id, "default": True})
        threads = env["llm.thread"].create(
            [
                {"name": "alice's", "user_id": alice.id, "provider_id": provider.id},
                {"name": "bob's", "user_id": bob.id, "provider_id": provider.id},
            ]
        )
        secret = threads[1].message_post(body="bob's secret", llm_role="user", author_id=bob.id)
        return {
            "alice": alice.id,
            "bob": bob.id,
            "boss": boss.id,
            "alice_thread": threads[0].id,
            "bob_thread": threads[1].id,
            "bob_message": secret.id,
            "provider": provider.id,
        }


def test_a_user_cannot_read_another_users_thread_or_messages(registry, people):
    with registry.environment(user=people["alice"]) as env:
        assert env["llm.thread"].search([]).mapped("name") == ["alice's"]
        assert env["llm.message"].search([]).mapped("body") == []
        bobs = env["llm.thread"].browse(people["bob_thread"])
        with pytest.raises(AccessError):
            bobs.name
        with pytest.raises(AccessError):
            bobs.message_post(body="hi")
        with pytest.raises(AccessError):
            env["llm.message"].browse(people["bob_message"]).body


def test_a_user_cannot_generate_in_another_users_thread(registry, people):
    with (
        registry.environment(user=people["alice"]) as env,
        pytest.raises(AccessError, match="'llm.thread'"),
    ):
        next(env["llm.thread"].browse(people["bob_thread"]).generate_response("hi"))
    with registry.environment() as env:
        bobs = env["llm.thread"].browse(people["bob_thread"])
        assert bobs.message_ids.mapped("body") == ["bob's secret"]
        assert bobs.generation_lock_token is False


def test_a_user_generates_in_their_own_thread(registry, people):
    with registry.environment(user=people["alice"]) as env:
        thread = env["llm.thread"].browse(people["alice_thread"])
        assert list(thread.generate_response("hello"))[-1]["type"] == "done"
        user, reply = thread.message_ids
        assert user.author_id.id == people["alice"] and reply.state == "done" and reply.body
        with pytest.raises(AccessError, match="'llm.provider'"):
            thread.provider_id.api_key  # the thread's provider is still closed to her


def test_managers_see_all_threads(registry, people):
    with registry.environment(user=people["boss"]) as env:
        assert sorted(env["llm.thread"].search([]).mapped("name")) == ["alice's", "bob's"]
        assert env["llm.message"].search([]).mapped("body") == ["bob's secret"]


def test_only_managers_read_provider_configuration(registry, people):
    with (
        registry.environment(user=people["alice"]) as env,
        pytest.raises(AccessError, match="'llm.provider'"),
    ):
        env["llm.provider"].browse(people["provider"]).api_base
    with registry.environment(user=people["alice"]) as env:
        assert env["llm.model"].search([]).mapped("name") == ["m"]  # models are readable
    with registry.environment(user=people["boss"]) as env:
        provider = env["llm.provider"].browse(people["provider"])
        assert provider.api_base.startswith("http://127.0.0.1:")
        provider.write({"timeout": 5.0})


def test_the_api_key_appears_nowhere_even_when_requests_fail(registry, people, caplog):
    caplog.set_level(logging.DEBUG)
    with registry.environment() as env:
        provider = env["llm.provider"].browse(people["provider"])
        provider.write({"api_key": KEY + "-wrong"})  # the simulator answers 401
    with registry.environment(user=people["alice"]) as env:
        thread = env["llm.thread"].browse(people["alice_thread"])
        updates = list(thread.generate_response("hello"))
        reply = thread.message_ids[-1]
        texts = [repr(updates), reply.error, repr(reply.read())]
        assert updates[-1]["type"] == "error" and "401" in updates[-1]["error"]
    with registry.environment() as env:
        provider = env["llm.provider"].browse(people["provider"])
        texts += [
            repr(provider),
            str(provider.read()),
            str(provider.api_key),
            repr(provider.api_key),
        ]
        try:
            provider.list_models()
        except Exception as error:  # whatever it is, its text must be clean
            texts.append(str(error))
            texts.append(repr(error))
        assert provider.api_key.get_secret_value() == KEY + "-wrong"
    texts.append(caplog.text)
    assert len(texts) == 10  # list_models() failed too (401)
    for text in texts:
        assert KEY not in text
