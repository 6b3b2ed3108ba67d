"""Direct generation: thread.generate_response() against the loopback simulators."""

import logging

import pytest

from addons.llm_thread.simulator import reply_text
from core import UserError

PROTOCOLS = ["openai", "anthropic", "ollama"]


@pytest.fixture
def registry(make_registry):
    return make_registry(addons=["llm_thread"])


@pytest.fixture
def make_thread(registry):
    def make(server, api_key="sk-secret-123", **thread_values):
        with registry.environment() as env:
            provider = env["llm.provider"].create({
                "name": f"sim-{server.protocol}", "service": server.protocol,
                "api_base": server.url, "api_key": api_key,
            })
            model = env["llm.model"].create(
                {"name": "sim-model", "provider_id": provider.id, "default": True})
            return env["llm.thread"].create({
                "name": "Chat", "provider_id": provider.id, "model_id": model.id,
                **thread_values,
            }).id
    return make


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reply_streams_and_completes(registry, make_thread, make_simulator, protocol):
    server = make_simulator(protocol)
    thread_id = make_thread(server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        updates = list(thread.generate_response("Hello there"))
        kinds = [u["type"] for u in updates]
        assert kinds[:2] == ["message_create", "message_create"]
        assert kinds[-2:] == ["message_update", "done"]
        text = "".join(u["content"] for u in updates if u["type"] == "message_chunk")
        assert text == reply_text("Hello there", 20)
        user, reply = thread.message_ids
        assert (user.llm_role, user.body, user.author_id.id) == ("user", "Hello there", 1)
        assert (reply.llm_role, reply.body, reply.state) == ("assistant", text, "done")
        assert reply.completion_tokens == 20 and reply.finish_reason


def test_history_and_system_prompt_are_sent(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server, system_prompt="Be brief.")
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        list(thread.generate_response("first"))
        list(thread.generate_response("second"))
        assert [m["role"] for m in thread._conversation()] == [
            "system", "user", "assistant", "user", "assistant"]


def test_cut_stream_keeps_partial_text_marked_with_the_error(registry, make_thread,
                                                             openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        updates = list(thread.generate_response("[sim:cut_after=5] go"))
        assert updates[-1]["type"] == "error" and updates[-1]["kind"] == "retryable"
        reply = thread.message_ids[-1]
        assert reply.state == "error" and reply.error
        assert reply.body == reply_text("[sim:cut_after=5] go", 20)[: len(reply.body)]
        assert len(reply.body.split()) == 5


@pytest.mark.parametrize(("directive", "kind"), [
    ("[sim:status=429 retry_after=3]", "retryable"),
    ("[sim:status=500]", "retryable"),
    ("[sim:status=400]", "permanent"),
    ("[sim:status=401]", "permanent"),
])
def test_provider_errors_are_classified(registry, make_thread, openai_server, directive, kind):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        updates = list(env["llm.thread"].browse(thread_id).generate_response(directive))
        assert updates[-1]["type"] == "error" and updates[-1]["kind"] == kind
        assert "Provider 'sim-openai' failed" in updates[-1]["error"]


def test_stopping_early_closes_the_http_stream(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        stream = env["llm.thread"].browse(thread_id).generate_response(
            "[sim:tokens=500 token_delay=0.01] long")
        for update in stream:
            if update["type"] == "message_chunk":
                break
        stream.close()
        reply = env["llm.thread"].browse(thread_id).message_ids[-1]
        assert reply.state == "cancelled" and reply.body
    stats = openai_server.wait_idle(timeout=5)
    assert stats["disconnects"] == 1 and stats["in_flight"] == 0


def test_two_generations_at_once_are_refused(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        first = env["llm.thread"].browse(thread_id).generate_response("[sim:token_delay=0.01] a")
        next(first)
        with (
            registry.environment() as other,  # another unit of work, as another process
            pytest.raises(UserError, match="already generating a response"),
        ):
            next(other["llm.thread"].browse(thread_id).generate_response("b"))
        first.close()
        assert list(env["llm.thread"].browse(thread_id).generate_response("c"))[-1][
            "type"] == "done"


def test_missing_service_method_names_service_and_method(registry, make_thread,
                                                         openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        provider = env["llm.thread"].browse(thread_id).provider_id
        with pytest.raises(UserError, match="service 'openai', which has no 'openai_embed'"):
            provider._dispatch("embed")


def test_list_models_creates_and_updates_models(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        provider = env["llm.thread"].browse(thread_id).provider_id
        found = provider.list_models()
        assert found and set(found.mapped("name")) <= set(provider.model_ids.mapped("name"))
        assert len(provider.list_models()) == len(found)  # no duplicates on a second run


def test_api_key_never_leaks(registry, make_thread, make_simulator, caplog):
    server = make_simulator("openai", api_key="the-right-key")
    thread_id = make_thread(server, api_key="sk-leaky-secret-987")
    caplog.set_level(logging.DEBUG)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        updates = list(thread.generate_response("hello"))
        provider = thread.provider_id
        texts = [repr(updates), repr(provider), str(provider.read()), caplog.text,
                 str(provider.api_key), repr(provider.api_key)]
        assert updates[-1]["type"] == "error" and "401" in updates[-1]["error"]
        assert provider.api_key.get_secret_value() == "sk-leaky-secret-987"
    for text in texts:
        assert "sk-leaky-secret-987" not in text
