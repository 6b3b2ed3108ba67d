"""The simulator on the wire: each protocol's exact frames, errors and auth, faults from
directives and the queue, pacing, stats over HTTP, and the ``simulator`` command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from addons.llm_thread.simulator import (
    Scenario,
    SimulatorServer,
    parse_directives,
    reply_chunks,
    reply_text,
)

ROOT = Path(__file__).resolve().parents[3]
KEY = "sk-sim-0123456789abcdef"
REQUESTS = {
    "openai": ("/chat/completions", {"model": "sim-gpt"}),
    "anthropic": ("/messages", {"model": "claude-sim-large", "max_tokens": 100}),
    "ollama": ("/api/chat", {"model": "sim-llama"}),
}


def chat(server, text, headers=None, **fields) -> httpx.Response:
    path, body = REQUESTS[server.protocol]
    body = {**body, "messages": [{"role": "user", "content": text}], **fields}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=5)


def sse_events(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event, data) of each event of a complete SSE body."""
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        if fields:
            events.append((fields.get("event"), fields["data"]))
    return events


# -- replies and scenarios ------------------------------------------------------------------


def test_replies_are_a_function_of_the_prompt():
    assert reply_text("Hello", 10) == reply_text("Hello", 10)
    assert reply_text("Hello", 10) != reply_text("Hello!", 10)
    assert len(reply_chunks("Hello", 7)) == 7
    assert all(chunk.endswith(" ") and chunk.count(" ") == 1 for chunk in reply_chunks("Hello", 7))


def test_directives():
    text = "Go [sim:status=429 retry_after=2] now [sim:tokens=5,token_delay=0.5]"

    assert parse_directives(text) == {
        "status": "429",
        "retry_after": "2",
        "tokens": "5",
        "token_delay": "0.5",
    }
    assert Scenario().with_directives(text) == Scenario(
        status=429, retry_after=2.0, tokens=5, token_delay=0.5
    )
    assert Scenario(tokens=3).with_directives("no directive") == Scenario(tokens=3)


@pytest.mark.parametrize(
    "text",
    [
        "[sim:colour=blue]",
        "[sim:tokens=many]",
        "[sim:tokens]",
        "[sim:status=200]",
        "[sim:token_delay=-1]",
    ],
)
def test_bad_directives_are_refused(text):
    with pytest.raises(ValueError):
        Scenario().with_directives(text)


def test_a_bad_directive_is_a_400(openai_server):
    response = chat(openai_server, "[sim:colour=blue]")

    assert response.status_code == 400
    assert "Unknown simulator setting(s): colour" in response.json()["error"]["message"]


def test_queued_faults_apply_to_one_request_each_in_order(ollama_server):
    ollama_server.push_fault(status=503)
    ollama_server.push_fault(tokens=2)
    with pytest.raises(ValueError):
        ollama_server.push_fault(colour="blue")

    assert chat(ollama_server, "Hi").status_code == 503
    assert chat(ollama_server, "Hi", stream=False).json()["eval_count"] == 2
    assert chat(ollama_server, "Hi", stream=False).json()["eval_count"] == 20


def test_directives_override_a_queued_fault(anthropic_server):
    anthropic_server.push_fault(tokens=2, status=500)

    response = chat(anthropic_server, "Hi [sim:tokens=4]")
    assert response.status_code == 500
    assert chat(anthropic_server, "Hi [sim:tokens=4]").json()["usage"]["output_tokens"] == 4


# -- OpenAI ---------------------------------------------------------------------------------


def test_openai_stream_frames(openai_server):
    response = chat(openai_server, "Hi", stream=True, stream_options={"include_usage": True})

    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert all(event is None for event, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 20, "total_tokens": 21}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert "".join(
        chunk["choices"][0]["delta"].get("content", "") for chunk in chunks[:-1]
    ) == reply_text("Hi", 20)


def test_openai_stream_without_include_usage_has_no_usage(openai_server):
    events = sse_events(chat(openai_server, "Hi", stream=True))

    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)


def test_openai_completion(openai_server):
    body = chat(openai_server, "Hi", max_tokens=3).json()

    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "refusal": None,
        "content": "".join(reply_chunks("Hi", 20)[:3]),
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


# -- Anthropic ------------------------------------------------------------------------------


def test_anthropic_stream_events(anthropic_server):
    response = chat(anthropic_server, "Hi", stream=True, system="Be brief")

    events = sse_events(response)
    names = [event for event, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 20,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert [payload["type"] for payload in payloads] == names
    assert payloads[0]["message"]["usage"]["input_tokens"] == 3
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
    assert payloads[-2]["usage"]["output_tokens"] == 20
    assert "".join(p["delta"]["text"] for p in payloads[3:-3]) == reply_text("Hi", 20)


def test_anthropic_in_stream_error(anthropic_server):
    events = sse_events(chat(anthropic_server, "Hi [sim:stream_error_after=1]", stream=True))

    assert events[-1][0] == "error"
    assert json.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_anthropic_message_and_missing_max_tokens(anthropic_server):
    body = chat(anthropic_server, "Hi").json()
    assert (body["type"], body["stop_reason"], body["content"]) == (
        "message",
        "end_turn",
        [{"type": "text", "text": reply_text("Hi", 20)}],
    )

    refused = chat(anthropic_server, "Hi", max_tokens=None)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


# -- Ollama ---------------------------------------------------------------------------------


def test_ollama_streams_ndjson_by_default(ollama_server):
    response = chat(ollama_server, "Hi")

    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["done"] for line in lines] == [False] * 20 + [True]
    assert "".join(line["message"]["content"] for line in lines) == reply_text("Hi", 20)
    assert lines[-1]["done_reason"] == "stop"
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (1, 20)


def test_ollama_without_streaming_and_with_num_predict(ollama_server):
    body = chat(ollama_server, "Hi", stream=False, options={"num_predict": 4}).json()

    assert body["done"] is True
    assert body["done_reason"] == "length"
    assert body["message"]["content"] == "".join(reply_chunks("Hi", 20)[:4])


# -- errors and auth, in each protocol's shape ----------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        (
            "openai",
            {
                "error": {
                    "message": "Slow down",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
        ),
        (
            "anthropic",
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
        ),
        ("ollama", {"error": "Slow down"}),
    ],
)
def test_error_bodies(request, protocol, body):
    server = request.getfixturevalue(f"{protocol}_server")
    server.push_fault(status=429, retry_after=3, message="Slow down")

    response = chat(server, "Hi", stream=True)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json() == body
    assert server.stats()["faults"] == 1


@pytest.mark.parametrize(
    ("protocol", "header", "error"),
    [
        (
            "openai",
            "authorization",
            {
                "message": "Incorrect API key provided: wro****cdef. You can "
                "find your API key at https://platform.openai.com/account/"
                "api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            },
        ),
        (
            "anthropic",
            "x-api-key",
            {"type": "authentication_error", "message": "invalid x-api-key"},
        ),
        ("ollama", "authorization", "unauthorized"),
    ],
)
def test_a_server_with_a_key_refuses_others(make_simulator, protocol, header, error):
    server = make_simulator(protocol, api_key=KEY)

    def headers(key):
        return {header: f"Bearer {key}" if header == "authorization" else key}

    refused = chat(server, "Hi", headers=headers("wrong-0123456789abcdef"))
    assert refused.status_code == 401
    assert refused.json()["error"] == error
    assert chat(server, "Hi").status_code == 401
    models_path = "/api/tags" if protocol == "ollama" else "/models"
    assert httpx.get(server.url + models_path).status_code == 401
    assert chat(server, "Hi", headers=headers(KEY)).status_code == 200


# -- pacing, faults, stats ------------------------------------------------------------------


def test_delays_pace_the_stream(make_simulator):
    server = make_simulator("ollama", tokens=4, first_token_delay=0.1, token_delay=0.05)
    arrivals = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        server.url + "/api/chat",
        timeout=5,
        json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
    ) as response:
        for _ in response.iter_lines():
            arrivals.append(time.monotonic() - started)

    assert arrivals[0] >= 0.1
    assert arrivals[-1] >= 0.1 + 3 * 0.05
    assert arrivals[-1] < 1.0


def test_an_unpaced_stream_is_not_held_back_by_nagle(openai_server):
    """The simulator answers at once, as a provider does: with Nagle's algorithm on its
    sockets, each streamed response's last small write waits for the client's delayed ACK
    (40 ms a request on Linux); 20 one-token streams on one kept-alive connection then take
    at least 0.8 s, against a few milliseconds."""
    path, body = REQUESTS["openai"]
    body = {**body, "stream": True, "messages": [{"role": "user", "content": "[sim:tokens=1]"}]}
    with httpx.Client(timeout=5) as client:
        client.post(openai_server.url + path, json=body).raise_for_status()  # connected
        started = time.monotonic()
        for _ in range(20):
            with client.stream("POST", openai_server.url + path, json=body) as response:
                assert [line for line in response.iter_lines() if line][-1] == "data: [DONE]"
        elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"20 one-token streams took {elapsed:.2f} s"


def test_a_cut_drops_the_connection_mid_body(openai_server):
    with pytest.raises(httpx.RemoteProtocolError):
        chat(openai_server, "Hi [sim:cut_after=2]", stream=True)

    stats = openai_server.wait_idle()
    assert (stats["faults"], stats["completed"], stats["disconnects"]) == (1, 0, 0)


def test_stats_over_http(ollama_server):
    chat(ollama_server, "Hi")
    chat(ollama_server, "Hi", stream=False)
    root = ollama_server.root_url

    assert httpx.get(root + "/_sim/stats").json() == {
        "requests": 2,
        "connections": 2,
        "in_flight": 0,
        "max_in_flight": 1,
        "completed": 2,
        "disconnects": 0,
        "faults": 0,
        "batches": 0,
        "batch_requests": 0,
        "prompt_tokens": 2,
        "completion_tokens": 40,
        "rate_limited": 0,
    }
    assert httpx.post(root + "/_sim/reset").json()["requests"] == 0
    assert ollama_server.stats()["completed"] == 0


def test_urls_and_stop():
    server = SimulatorServer("ollama").start()
    port = server.port
    assert server.url == server.root_url == f"http://127.0.0.1:{port}"
    server.stop()

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/tags")
    with pytest.raises(RuntimeError):
        server.url


def test_unknown_protocol():
    with pytest.raises(ValueError, match="Unknown protocol 'gemini'"):
        SimulatorServer("gemini")


# -- the command ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inherited_sigint",
    [signal.SIG_DFL, signal.SIG_IGN],
    ids=["from-a-terminal", "in-a-background-job"],
)
def test_the_simulator_command_serves_until_interrupted(inherited_sigint):
    command = [
        sys.executable,
        "-c",
        "from addons.llm_thread.cli import simulator; simulator()",
        "--protocol",
        "openai",
        "--token-delay",
        "0",
        "--tokens",
        "3",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited_sigint),
    )
    try:
        line = process.stdout.readline()
        assert "set the provider's api_base to http://127.0.0.1:" in line
        url = line.split("api_base to ")[1].split()[0]
        response = httpx.post(
            url + "/chat/completions",
            timeout=5,
            json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert response.json()["choices"][0]["message"]["content"] == reply_text("Hi", 3)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert output.strip() == "Simulator stopped."
