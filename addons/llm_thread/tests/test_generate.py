"""Direct generation: thread.generate_response() against the loopback simulators."""

import pytest

from addons.llm_thread.simulator import reply_text
from core import UserError
from tests.statements import statements

PROTOCOLS = ["openai", "anthropic", "ollama"]


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
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
        ]


def test_cut_stream_keeps_partial_text_marked_with_the_error(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        updates = list(thread.generate_response("[sim:cut_after=5] go"))
        assert updates[-1]["type"] == "error" and updates[-1]["kind"] == "retryable"
        reply = thread.message_ids[-1]
        assert reply.state == "error" and reply.error
        assert reply.body == reply_text("[sim:cut_after=5] go", 20)[: len(reply.body)]
        assert len(reply.body.split()) == 5


@pytest.mark.parametrize(
    ("directive", "kind"),
    [
        ("[sim:status=429 retry_after=3]", "retryable"),
        ("[sim:status=500]", "retryable"),
        ("[sim:status=400]", "permanent"),
        ("[sim:status=401]", "permanent"),
    ],
)
def test_provider_errors_are_classified(registry, make_thread, openai_server, directive, kind):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        updates = list(env["llm.thread"].browse(thread_id).generate_response(directive))
        assert updates[-1]["type"] == "error" and updates[-1]["kind"] == kind
        assert "Provider 'sim-openai' failed" in updates[-1]["error"]


def test_stopping_early_closes_the_http_stream(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        stream = (
            env["llm.thread"]
            .browse(thread_id)
            .generate_response("[sim:tokens=500 token_delay=0.01] long")
        )
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
        assert (
            list(env["llm.thread"].browse(thread_id).generate_response("c"))[-1]["type"] == "done"
        )


def test_missing_service_method_names_service_and_method(registry, make_thread, openai_server):
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


def test_update_shapes(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        updates = list(env["llm.thread"].browse(thread_id).generate_response("shapes"))
    payload_keys = {
        "id",
        "thread_id",
        "llm_role",
        "body",
        "state",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
    }
    for update in updates:
        assert set(update["message"]) == payload_keys
    user, reply, *chunks, final, done = updates
    assert user["type"] == "message_create" and user["message"]["llm_role"] == "user"
    assert reply["type"] == "message_create" and reply["message"]["state"] == "streaming"
    assert {c["type"] for c in chunks} == {"message_chunk"}
    assert all(c["message"]["id"] == reply["message"]["id"] for c in chunks)
    assert final["type"] == "message_update" and final["message"]["state"] == "done"
    assert final["message"]["body"] == "".join(c["content"] for c in chunks)
    assert done == {"type": "done", "message": final["message"]}


def test_options_reach_the_provider(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        assert list(thread.generate_response("short", max_tokens=3))[-1]["type"] == "done"
        reply = thread.message_ids[-1]
        assert (reply.completion_tokens, reply.finish_reason) == (3, "length")
        assert len(reply.body.split()) == 3


def test_without_a_user_message_the_history_is_answered(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        thread.message_post(body="posted earlier", llm_role="user")
        updates = list(thread.generate_response())
        assert [u["type"] for u in updates].count("message_create") == 1
        assert updates[-1]["type"] == "done"
        assert thread.message_ids.mapped("llm_role") == ["user", "assistant"]


def test_stopping_at_done_leaves_the_thread_free(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        first = env["llm.thread"].browse(thread_id).generate_response("one")
        for update in first:
            if update["type"] == "done":
                break  # the generator is left suspended, not closed
        second = list(env["llm.thread"].browse(thread_id).generate_response("two"))
        assert second[-1]["type"] == "done"
        first.close()


def test_failed_replies_stay_out_of_the_next_conversation(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        assert list(thread.generate_response("[sim:status=500] a"))[-1]["type"] == "error"
        assert list(thread.generate_response("b"))[-1]["type"] == "done"
        assert [m["content"][:1] for m in thread._conversation()] == [
            "[",
            "b",
            reply_text("b", 20)[:1],
        ]
        assert thread.message_ids.mapped("state") == ["done", "error", "done", "done"]


def test_conversations_of_many_threads_are_read_in_one_query(registry, make_thread, openai_server):
    """A worker prepares the jobs it claims together: each gets its own thread's messages,
    up to its own last message (the same thread may come twice), in one query."""
    first = make_thread(openai_server, system_prompt="Be brief.")
    with registry.environment() as env:
        one = env["llm.thread"].browse(first)
        two = one.create({"name": "two", "provider_id": one.provider_id.id})
        second = two.id
        a = one.message_post("a")
        one.message_post("draft", llm_role="assistant", state="streaming")
        b = one.message_post("b")
        two.message_post("c")
        with statements(registry) as seen:
            conversations = (
                env["llm.thread"].browse([first, second, first])._conversations([a.id, None, b.id])
            )
        assert conversations == [
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"}],
            [{"role": "user", "content": "c"}],
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
            ],
        ]
        assert len([s for s in seen if "FROM llm_message" in s]) == 1
        assert one._conversation(until=a) == conversations[0]


def test_generation_commits_its_progress(registry, make_thread, openai_server):
    """Another transaction sees the user message and the streaming reply while the
    generator is suspended, and the generator holds no transaction meanwhile."""
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        stream = env["llm.thread"].browse(thread_id).generate_response("[sim:tokens=50] hi")
        for update in stream:
            if update["type"] == "message_chunk":
                break
        assert env.cr._connection is None  # no transaction open across the yield
        with registry.environment() as other:
            seen = other["llm.message"].search([("thread_id", "=", thread_id)])
            assert seen.mapped("state") == ["done", "streaming"]
            assert other["llm.thread"].browse(thread_id).generation_lock_token
        list(stream)
        with registry.environment() as other:
            assert other["llm.thread"].browse(thread_id).generation_lock_token is False
