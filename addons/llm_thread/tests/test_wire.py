"""The wire clients against the simulator over real loopback HTTP, for each protocol: the
reply, usage and finish; every failure classified; streams closed when the consumer stops."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from addons.llm_thread.simulator import reply_chunks, reply_text
from addons.llm_thread.wire import PROTOCOLS, Finish, ProviderError, TextDelta, Usage, stream_chat

PROVIDER = "my-provider"
KEY = "sk-test-0123456789abcdef"
MODELS = {"openai": "sim-gpt", "anthropic": "claude-sim-large", "ollama": "sim-llama:latest"}
STOP = {"openai": "stop", "anthropic": "end_turn", "ollama": "stop"}
LENGTH = {"openai": "length", "anthropic": "max_tokens", "ollama": "length"}
UNAUTHORIZED = {
    "openai": "Incorrect API key provided",
    "anthropic": "invalid x-api-key",
    "ollama": "unauthorized",
}


@pytest.fixture(params=list(PROTOCOLS))
def protocol(request) -> str:
    return request.param


@pytest.fixture
def server(request, protocol):
    return request.getfixturevalue(f"{protocol}_server")


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as client:
        yield client


def stream(server, client, text, *, api_key=None, system=None, options=None, api_base=None):
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return stream_chat(
        server.protocol,
        client,
        provider=PROVIDER,
        api_base=api_base or server.url,
        api_key=api_key,
        model=MODELS[server.protocol],
        messages=messages,
        options=options,
    )


def consume(events) -> tuple[str, ProviderError]:
    """The text streamed before the ProviderError that must end ``events``."""
    parts = []
    with pytest.raises(ProviderError) as caught:
        for event in events:
            if isinstance(event, TextDelta):
                parts.append(event.text)
    return "".join(parts), caught.value


def test_stream_yields_the_deterministic_reply_then_usage_and_finish(server, client, protocol):
    events = list(stream(server, client, "Tell me a story", system="Be brief"))

    text = "".join(event.text for event in events[:-2])
    assert all(isinstance(event, TextDelta) for event in events[:-2])
    assert text == reply_text("Tell me a story", 20)
    cached = 0 if protocol == "anthropic" else None  # Anthropic reports its cache reads
    assert events[-2] == Usage(prompt_tokens=6, completion_tokens=20, cached_tokens=cached)
    assert isinstance(events[-1], Finish)
    assert events[-1].reason == STOP[protocol]
    assert events[-1].metadata["model"] == MODELS[protocol]
    assert server.wait_idle()["completed"] == 1


def test_streams_read_to_the_end_so_the_connection_is_reused(server, client):
    """Stopping at the terminal event would leave the body unread and the pooled connection
    dropped: a new TCP (and, for a real provider, TLS) handshake per reply."""
    for _ in range(3):
        assert isinstance(list(stream(server, client, "Again"))[-1], Finish)

    stats = server.wait_idle()
    assert (stats["requests"], stats["connections"], stats["completed"]) == (3, 1, 3)


def test_max_tokens_truncates_with_the_protocols_length_reason(server, client, protocol):
    events = list(stream(server, client, "Count", options={"max_tokens": 5}))

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(
        reply_chunks("Count", 20)[:5]
    )
    assert events[-2].completion_tokens == 5
    assert events[-1].reason == LENGTH[protocol]


def test_429_with_retry_after_is_retryable(server, client):
    _, error = consume(stream(server, client, "Hi [sim:status=429 retry_after=2]"))

    assert (error.status, error.retryable, error.kind, error.retry_after) == (
        429,
        True,
        "retryable",
        2.0,
    )
    assert str(error) == (
        f"Provider '{PROVIDER}' failed: HTTP 429 Too Many Requests: "
        "Rate limit exceeded (retryable, retry after 2s)"
    )


def test_a_queued_500_is_retryable_and_fails_one_request_only(server, client):
    server.push_fault(status=500)

    _, error = consume(stream(server, client, "Hi"))
    assert (error.status, error.kind) == (500, "retryable")
    assert isinstance(list(stream(server, client, "Hi"))[-1], Finish)
    assert server.wait_idle()["faults"] == 1


def test_400_is_permanent_with_the_providers_message(server, client):
    server.push_fault(status=400, message="model 'nope' does not exist")

    _, error = consume(stream(server, client, "Hi"))
    assert (error.status, error.retryable, error.kind) == (400, False, "permanent")
    assert error.message == "model 'nope' does not exist"
    assert "HTTP 400 Bad Request: model 'nope' does not exist (permanent)" in str(error)


@pytest.mark.parametrize("given", ["sk-wrong-0123456789abcdef", None])
def test_a_refused_key_is_a_permanent_401_that_never_shows_a_key(
    make_simulator, client, protocol, given
):
    server = make_simulator(protocol, api_key=KEY)

    _, error = consume(stream(server, client, "Hi", api_key=given))
    assert (error.status, error.kind) == (401, "permanent")
    if given:
        assert UNAUTHORIZED[protocol] in error.message
    for text in (str(error), repr(error), error.message):
        assert KEY not in text
        assert given is None or given not in text
    assert isinstance(list(stream(server, client, "Hi", api_key=KEY))[-1], Finish)


def test_slow_first_byte_with_a_short_read_timeout_is_retryable(server):
    with httpx.Client(timeout=httpx.Timeout(5, read=0.2)) as client:
        _, error = consume(stream(server, client, "Hi [sim:first_token_delay=2]"))

    assert (error.status, error.kind) == (None, "retryable")
    assert "Timed out waiting for the provider's response" in error.message


def test_a_cut_connection_is_retryable_after_the_partial_text(server, client):
    text, error = consume(stream(server, client, "Hi [sim:cut_after=5]"))

    assert text == "".join(reply_chunks("Hi [sim:cut_after=5]", 20)[:5])
    assert error.kind == "retryable"
    assert "closed the connection" in error.message


def test_a_stream_ending_without_its_terminal_marker_is_retryable(server, client):
    text, error = consume(stream(server, client, "Hi [sim:end_after=4]"))

    assert text == "".join(reply_chunks("Hi [sim:end_after=4]", 20)[:4])
    assert error.kind == "retryable"
    assert error.message == "The stream ended before completion"


def test_an_in_stream_error_event_raises(server, client):
    text, error = consume(stream(server, client, "Hi [sim:stream_error_after=3]"))

    assert text == "".join(reply_chunks("Hi [sim:stream_error_after=3]", 20)[:3])
    assert error.message.startswith("Error in the stream: ")
    assert error.kind == "retryable"


def test_a_malformed_stream_is_permanent(server, client):
    text, error = consume(stream(server, client, "Hi [sim:malformed_after=2]"))

    assert len(text.split()) == 2
    assert error.kind == "permanent"
    assert error.message.startswith("Malformed response stream: invalid JSON")


def test_closing_the_generator_closes_the_http_stream(server, client):
    events = stream(server, client, "Hi [sim:tokens=1000 token_delay=0.005]")
    for _ in range(3):
        next(events)
    events.close()

    stats = server.wait_idle()
    assert (stats["disconnects"], stats["completed"]) == (1, 0)


def test_an_unreachable_provider_is_retryable_and_never_shows_the_key(server, client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    api_base = server.url.replace(f":{server.port}", f":{closed_port}")

    _, error = consume(stream(server, client, "Hi", api_key=KEY, api_base=api_base))
    assert error.kind == "retryable"
    assert error.message.startswith("Could not connect to the provider")
    assert KEY not in str(error) and KEY not in repr(error)


def test_a_wrong_api_base_is_a_permanent_404(server, client):
    _, error = consume(stream(server, client, "Hi", api_base=server.root_url + "/nowhere"))

    assert (error.status, error.kind, error.message) == (404, "permanent", "Not Found")


def test_list_models(server, client, protocol):
    models = PROTOCOLS[protocol].list_models(
        client, provider=PROVIDER, api_base=server.url, api_key=None
    )

    expected = {
        "openai": [
            ("sim-gpt", "chat"),
            ("sim-gpt-mini", "chat"),
            ("sim-text-embedding", "embedding"),
        ],
        "anthropic": [("claude-sim-large", "chat"), ("claude-sim-small", "chat")],
        "ollama": [("sim-llama:latest", "chat"), ("sim-embed-text:latest", "embedding")],
    }[protocol]
    assert [(model["name"], model["model_use"]) for model in models] == expected


def test_list_models_with_a_refused_key(make_simulator, client, protocol):
    server = make_simulator(protocol, api_key=KEY)

    with pytest.raises(ProviderError) as caught:
        PROTOCOLS[protocol].list_models(
            client, provider=PROVIDER, api_base=server.url, api_key="sk-wrong-0123456789abcdef"
        )
    assert (caught.value.status, caught.value.kind) == (401, "permanent")


def test_concurrent_streams_are_counted_in_max_in_flight(server, client):
    prompts = [f"Question {index} [sim:tokens=10 token_delay=0.02]" for index in range(3)]
    start = threading.Barrier(len(prompts))
    texts: list[str] = []

    def run(prompt: str) -> None:
        start.wait()
        events = stream(server, client, prompt)
        texts.append("".join(e.text for e in events if isinstance(e, TextDelta)))

    threads = [threading.Thread(target=run, args=(prompt,)) for prompt in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(texts) == sorted(reply_text(prompt, 10) for prompt in prompts)
    stats = server.wait_idle()
    assert (stats["max_in_flight"], stats["completed"]) == (3, 3)
