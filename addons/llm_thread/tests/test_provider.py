"""Providers: service dispatch (built-in and added by an addon), models, the API key at rest,
and provider failures as ProviderError."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from addons.llm_thread.wire.errors import ProviderError
from addons.llm_thread.wire.events import Finish, TextDelta, Usage
from core import UserError, ValidationError

TEST_ADDONS = Path(__file__).parent / "addons"
PROJECT_ADDONS = Path(__file__).parents[2]


@pytest.fixture
def echo_registry(make_registry):
    return make_registry(addons_path=[PROJECT_ADDONS, TEST_ADDONS], addons=["llm_echo_service"])


def make_provider(env, service, **values):
    provider = env["llm.provider"].create({"name": service, "service": service, **values})
    env["llm.model"].create({"name": f"{service}-1", "provider_id": provider.id, "default": True})
    return provider


# -- dispatch ------------------------------------------------------------------------------
def test_an_addon_adds_a_service(echo_registry):
    with echo_registry.environment() as env:
        provider = make_provider(env, "echo")
        assert ("echo", "Echo") in env["llm.provider"]._fields["service"].selection
        events = list(provider.chat([{"role": "user", "content": "hello you"}], temperature=0))
        assert events == [
            TextDelta("HELLO "),  # echo_format_messages ran first
            TextDelta("YOU "),
            Usage(1, 2),
            Finish("stop", {"provider": "echo", "model": "echo-1", "temperature": 0}),
        ]
        thread = env["llm.thread"].create({"provider_id": provider.id})
        updates = list(thread.generate_response("say it"))
        assert updates[-1]["type"] == "done"
        reply = thread.message_ids[-1]
        assert (reply.body, reply.completion_tokens, reply.finish_reason) == ("SAY IT ", 2, "stop")
        assert reply.provider_metadata == {"provider": "echo", "model": "echo-1"}
        found = provider.list_models()
        assert sorted(found.mapped("model_use")) == ["chat", "embedding"]


def test_a_missing_service_method_names_service_and_method(echo_registry):
    with echo_registry.environment() as env:
        provider = make_provider(env, "half")
        expected = "service 'half', which has no 'half_format_messages' method"
        with pytest.raises(UserError, match=expected):
            provider.chat([{"role": "user", "content": "hi"}])
        with pytest.raises(UserError, match="'half_models'"):
            provider.list_models()
        thread = env["llm.thread"].create({"provider_id": provider.id})
        final = list(thread.generate_response("hi"))[-1]
        assert final["type"] == "error" and final["kind"] == "permanent"
        assert expected in final["error"]
        assert thread.message_ids[-1].state == "error"


def test_an_unexpected_error_marks_the_reply_and_propagates(echo_registry):
    with echo_registry.environment() as env:
        thread = env["llm.thread"].create({"provider_id": make_provider(env, "echo").id})
        with pytest.raises(RuntimeError, match="the echo service broke"):
            list(thread.generate_response("boom"))
        reply = thread.message_ids[-1]
        assert (reply.state, reply.error) == (
            "error",
            "The generation failed unexpectedly (RuntimeError).",
        )
        assert list(thread.generate_response("again"))[-1]["type"] == "done"  # unlocked


def test_the_default_chat_model_is_used_when_the_thread_has_none(echo_registry):
    with echo_registry.environment() as env:
        provider = env["llm.provider"].create({"name": "e", "service": "echo"})
        thread = env["llm.thread"].create({"provider_id": provider.id})
        final = list(thread.generate_response("hi"))[-1]
        assert final["type"] == "error" and "has no chat model" in final["error"]
        env["llm.model"].create(
            [
                {
                    "name": "embed",
                    "provider_id": provider.id,
                    "model_use": "embedding",
                    "default": True,
                },
                {"name": "chat-a", "provider_id": provider.id},
                {"name": "chat-b", "provider_id": provider.id, "default": True},
            ]
        )
        assert list(thread.generate_response("hi"))[-1]["type"] == "done"
        assert thread.message_ids[-1].provider_metadata["model"] == "chat-b"


# -- built-in services ---------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama"])
def test_list_models_creates_and_updates_models(registry, make_simulator, protocol):
    server = make_simulator(protocol)
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "p", "service": protocol, "api_base": server.url, "api_key": "k"}
        )
        found = provider.list_models()
        assert found and found.mapped("provider_id") == provider
        names = sorted(found.mapped("name"))
        found[0].write({"active": False})
        again = provider.list_models()
        assert sorted(again.mapped("name")) == names and all(again.mapped("active"))
        assert len(provider.model_ids) == len(names)  # updated, not duplicated
        assert set(again.mapped("model_use")) <= {"chat", "embedding"}


def test_chat_without_streaming_collects_the_reply(registry, openai_server):
    with registry.environment() as env:
        provider = make_provider(env, "openai", api_base=openai_server.url)
        result = provider.chat([{"role": "user", "content": "hi"}], stream=False)
        assert result["content"] and result["finish_reason"] == "stop"
        assert result["usage"].completion_tokens == 20


def test_provider_failures_are_classified_provider_errors(registry, make_simulator):
    slow = make_simulator("openai", first_token_delay=2.0)
    with registry.environment() as env:
        timing_out = env["llm.provider"].create(
            {"name": "slow", "service": "openai", "api_base": slow.url, "timeout": 0.2}
        )
        with pytest.raises(ProviderError) as timed_out:
            list(timing_out.chat([{"role": "user", "content": "hi"}], model="m"))
        refused = env["llm.provider"].create(
            {"name": "down", "service": "ollama", "api_base": "http://127.0.0.1:9"}
        )
        with pytest.raises(ProviderError) as refusal:
            refused.list_models()
    for error, name in ((timed_out.value, "slow"), (refusal.value, "down")):
        assert error.provider == name and error.retryable and error.kind == "retryable"
        assert str(error).startswith(f"Provider '{name}' failed: ")


# -- records -------------------------------------------------------------------------------
def test_one_default_model_per_provider_and_use(registry):
    with registry.environment() as env:
        provider = env["llm.provider"].create({"name": "p", "service": "openai"})
        other = env["llm.provider"].create({"name": "q", "service": "openai"})
        Model = env["llm.model"]
        a = Model.create({"name": "a", "provider_id": provider.id, "default": True})
        embed = Model.create(
            {"name": "e", "provider_id": provider.id, "model_use": "embedding", "default": True}
        )
        elsewhere = Model.create({"name": "a", "provider_id": other.id, "default": True})
        b = Model.create({"name": "b", "provider_id": provider.id, "default": True})
        assert (a.default, b.default, embed.default, elsewhere.default) == (
            False,
            True,
            True,
            True,
        )
        a.write({"default": True})
        assert (a.default, b.default) == (True, False)
        with pytest.raises(ValidationError, match="The provider has this model"):
            Model.create({"name": "a", "provider_id": provider.id})


def test_provider_names_are_unique(registry):
    with registry.environment() as env:
        env["llm.provider"].create({"name": "p", "service": "openai"})
        with pytest.raises(ValidationError, match="Another provider has this name"):
            env["llm.provider"].create({"name": "p", "service": "ollama"})


def test_the_api_key_is_encrypted_at_rest_and_masked(registry):
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "p", "service": "openai", "api_key": "sk-at-rest-4242"}
        )
        stored = env.cr.execute(
            sa.text("SELECT api_key FROM llm_provider WHERE id = :id"), {"id": provider.id}
        ).scalar_one()
        assert stored and "sk-at-rest-4242" not in stored
        assert provider.api_key.get_secret_value() == "sk-at-rest-4242"
        shown = provider.read(["api_key"])[0]["api_key"]
        assert str(shown) == "**********" and "4242" not in repr(provider.api_key)
