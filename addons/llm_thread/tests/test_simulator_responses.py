"""The simulator's OpenAI Responses API, background mode included, driven by the official SDK."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from addons.llm_thread.simulator import reply_text

PROMPT = "Tell me a story"


def client(server, api_key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0)


def observed(server) -> dict:
    return httpx.get(server.root_url + "/_sim/responses").json()


def wait_ended(sdk: openai.OpenAI, response_id: str):
    deadline = time.monotonic() + 2
    while (response := sdk.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, response.status
        time.sleep(0.005)
    return response


def test_background_create_then_poll(openai_server):
    sdk = client(openai_server)
    prompt = f"{PROMPT} [sim:tokens=8 token_delay=0.005]"
    created = sdk.responses.create(model="sim-gpt", input=prompt, background=True)
    assert (created.status, created.background) == ("queued", True)
    done = wait_ended(sdk, created.id)
    assert done.status == "completed"
    assert done.output_text == reply_text(prompt, 8)
    assert (done.usage.output_tokens, done.usage.input_tokens_details.cached_tokens) == (8, 0)


def test_input_messages_and_instructions(openai_server):
    sdk = client(openai_server)
    prompt = f"{PROMPT} [sim:tokens=4]"
    messages = [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}]
    response = sdk.responses.create(model="sim-gpt", input=messages, instructions="Be brief.")
    assert (response.status, response.output_text) == ("completed", reply_text(prompt, 4))
    assert response.output[0].id.startswith("msg_")


def test_background_stream_numbers_the_events(openai_server):
    sdk = client(openai_server)
    prompt = f"{PROMPT} [sim:tokens=6 token_delay=0.002]"
    events = list(sdk.responses.create(model="sim-gpt", input=prompt, background=True, stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[0].response.status == "queued"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == reply_text(prompt, 6)
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.total_tokens == events[-1].response.usage.input_tokens + 6


def test_resume_after_a_dropped_stream_reuses_the_generation(openai_server):
    sdk = client(openai_server)
    prompt = f"{PROMPT} [sim:tokens=20 token_delay=0.01]"
    before = observed(openai_server)["generated"]
    stream = sdk.responses.create(model="sim-gpt", input=prompt, background=True, stream=True)
    seen: list[str] = []
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            seen.append(event.delta)
            cursor = event.sequence_number
            if len(seen) == 3:
                break
    stream.close()  # the client drops; the background generation goes on
    rest = sdk.responses.retrieve(response_id, stream=True, starting_after=cursor)
    events = list(rest)
    assert events[0].sequence_number == cursor + 1
    seen += [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(seen) == reply_text(prompt, 20)
    assert events[-1].type == "response.completed"
    state = observed(openai_server)
    assert state["generated"] == before + 1
    assert state["responses"][response_id]["generations"] == 1


def test_cancel_stops_the_generation(openai_server):
    sdk = client(openai_server)
    prompt = f"{PROMPT} [sim:tokens=200 token_delay=0.01]"
    created = sdk.responses.create(model="sim-gpt", input=prompt, background=True)
    stream = sdk.responses.retrieve(created.id, stream=True, starting_after=0)
    cancelled = sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert sdk.responses.cancel(created.id).status == "cancelled"  # idempotent
    assert [event.type for event in stream][-1] != "response.completed"  # the stream just ends
    events = observed(openai_server)["responses"][created.id]["events"]
    time.sleep(0.05)
    assert observed(openai_server)["responses"][created.id] == {
        "status": "cancelled",
        "events": events,
        "generations": 1,
    }
    assert sdk.responses.retrieve(created.id).status == "cancelled"


def test_a_failure_mid_stream_fails_the_response(openai_server):
    sdk = client(openai_server)
    prompt = f"{PROMPT} [sim:tokens=5 stream_error_after=2 message=boom]"
    created = sdk.responses.create(model="sim-gpt", input=prompt, background=True)
    failed = wait_ended(sdk, created.id)
    assert failed.status == "failed"
    assert (failed.error.code, failed.error.message) == ("server_error", "boom")


def test_status_fault_answers_at_creation(openai_server):
    with pytest.raises(openai.RateLimitError):
        client(openai_server).responses.create(
            model="sim-gpt", input="hi [sim:status=429]", background=True
        )


def test_streaming_a_foreground_response_again_is_refused(openai_server):
    sdk = client(openai_server)
    response = sdk.responses.create(model="sim-gpt", input="hi [sim:tokens=3]")
    assert response.background is False and response.status == "completed"
    with pytest.raises(openai.BadRequestError, match="not created with background=true"):
        list(sdk.responses.retrieve(response.id, stream=True, starting_after=0))
    with pytest.raises(openai.BadRequestError):
        sdk.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_unknown")


def test_foreground_stream(openai_server):
    prompt = "hi [sim:tokens=4]"
    events = list(
        client(openai_server).responses.create(model="sim-gpt", input=prompt, stream=True)
    )
    assert events[0].response.status == "in_progress"
    assert events[-1].response.output_text == reply_text(prompt, 4)


def test_the_key_is_checked(make_simulator):
    server = make_simulator("openai", api_key="sk-right")
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").responses.create(model="sim-gpt", input="hi", background=True)
    created = client(server, "sk-right").responses.create(model="sim-gpt", input="hi")
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").responses.retrieve(created.id)
