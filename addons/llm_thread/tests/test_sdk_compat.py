"""The official SDKs read the simulator as they read the real APIs: the simulator speaks the
protocols, not just what our own clients accept."""

from __future__ import annotations

import pytest

from addons.llm_thread.simulator import reply_text

KEY = "sk-sdk-0123456789abcdef"
PROMPT = "Tell me about queues"


@pytest.fixture
def openai_sdk():
    return pytest.importorskip("openai", reason="the openai SDK is not installed")


@pytest.fixture
def anthropic_sdk():
    return pytest.importorskip("anthropic", reason="the anthropic SDK is not installed")


@pytest.fixture
def openai_client(openai_sdk, openai_server):
    with openai_sdk.OpenAI(base_url=openai_server.url, api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(anthropic_sdk, anthropic_server):
    # The SDK's base_url is the server's root: it adds /v1 itself.
    with anthropic_sdk.Anthropic(
        base_url=anthropic_server.root_url, api_key=KEY, max_retries=0
    ) as client:
        yield client


def test_openai_sdk_streams_with_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model="sim-gpt",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == reply_text(PROMPT, 20)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 20)


def test_openai_sdk_completion_and_models(openai_client):
    completion = openai_client.chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": PROMPT}]
    )

    assert completion.choices[0].message.content == reply_text(PROMPT, 20)
    assert completion.usage.total_tokens == 24
    assert [model.id for model in openai_client.models.list()] == [
        "sim-gpt",
        "sim-gpt-mini",
        "sim-text-embedding",
    ]


def test_openai_sdk_reads_errors(openai_sdk, openai_client, openai_server):
    openai_server.push_fault(status=429, message="Slow down")
    with pytest.raises(openai_sdk.RateLimitError) as caught:
        openai_client.chat.completions.create(
            model="sim-gpt", messages=[{"role": "user", "content": PROMPT}]
        )
    assert caught.value.body["message"] == "Slow down"

    stream = openai_client.chat.completions.create(
        model="sim-gpt",
        messages=[{"role": "user", "content": "Hi [sim:stream_error_after=2]"}],
        stream=True,
    )
    with pytest.raises(openai_sdk.APIError, match="The server had an error"):
        list(stream)


def test_anthropic_sdk_stream_helper(anthropic_client):
    with anthropic_client.messages.stream(
        model="claude-sim-large",
        max_tokens=100,
        system="Be brief",
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()

    assert text == reply_text(PROMPT, 20)
    assert message.content[0].text == text
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 20)


def test_anthropic_sdk_raw_stream_and_message(anthropic_client):
    events = list(
        anthropic_client.messages.create(
            model="claude-sim-large",
            max_tokens=100,
            stream=True,
            messages=[{"role": "user", "content": PROMPT}],
        )
    )
    assert [event.type for event in events[:2]] == ["message_start", "content_block_start"]
    assert events[-1].type == "message_stop"

    message = anthropic_client.messages.create(
        model="claude-sim-large", max_tokens=5, messages=[{"role": "user", "content": PROMPT}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_anthropic_sdk_reads_errors(
    anthropic_sdk, anthropic_client, anthropic_server, make_simulator
):
    anthropic_server.push_fault(status=529)
    with pytest.raises(anthropic_sdk.APIStatusError) as caught:
        anthropic_client.messages.create(
            model="claude-sim-large", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
        )
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"

    guarded = make_simulator("anthropic", api_key="another-key")
    with (
        anthropic_sdk.Anthropic(base_url=guarded.root_url, api_key=KEY, max_retries=0) as client,
        pytest.raises(anthropic_sdk.AuthenticationError),
    ):
        client.models.list()
