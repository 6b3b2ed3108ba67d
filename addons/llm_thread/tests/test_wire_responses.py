"""The wire client of OpenAI background responses against the simulator: resumable streams."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from addons.llm_thread import wire
from addons.llm_thread.simulator import reply_text
from addons.llm_thread.wire import (
    Finish,
    ProviderError,
    Resumable,
    TextDelta,
    Usage,
    openai_responses,
)

KEY = "sk-test"


def request(server, prompt: str, **options) -> dict:
    return {
        "provider": "sim",
        "api_key": KEY,
        "api_base": server.url,
        "model": "sim-gpt",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt},
        ],
        "options": options,
    }


def test_stream_background_yields_resumable_deltas_usage_finish(openai_server):
    prompt = "Story [sim:tokens=6 token_delay=0.002]"
    with httpx.Client() as client:
        events = list(wire.stream_background(client, **request(openai_server, prompt)))
    resumable, *deltas, usage, finish = events
    assert isinstance(resumable, Resumable) and resumable.cursor == 0
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    assert [delta.cursor for delta in deltas] == list(range(4, 10))
    assert "".join(delta.text for delta in deltas) == reply_text(prompt, 6)
    assert usage == Usage(usage.prompt_tokens, 6) and usage.prompt_tokens > 0
    assert finish == Finish("stop", {"id": resumable.response_id, "model": "sim-gpt"})


def test_resume_yields_exactly_the_rest(openai_server):
    prompt = "Story [sim:tokens=12 token_delay=0.005]"
    with httpx.Client() as client:
        stream = wire.stream_background(client, **request(openai_server, prompt))
        first = [next(stream) for _ in range(4)]  # Resumable and three deltas, then drop
        stream.close()
        resumable, last = first[0], first[-1]
        rest = list(
            wire.stream_background(
                client,
                **request(openai_server, "unused"),
                resume=(resumable.response_id, last.cursor),
            )
        )
    texts = [event.text for event in [*first[1:], *rest] if isinstance(event, TextDelta)]
    assert "".join(texts) == reply_text(prompt, 12)
    assert not any(isinstance(event, Resumable) for event in rest)
    assert isinstance(rest[-1], Finish) and rest[-1].reason == "stop"
    observed = httpx.get(openai_server.root_url + "/_sim/responses").json()
    assert observed["responses"][resumable.response_id]["generations"] == 1


def test_astream_background_and_resume(openai_server):
    async def main(server) -> None:
        prompt = "Story [sim:tokens=8 token_delay=0.002]"
        async with httpx.AsyncClient() as client:
            stream = wire.astream_background(client, **request(server, prompt), timeout=5)
            resumable = await anext(stream)
            first = await anext(stream)
            await stream.aclose()
            resume = (resumable.response_id, first.cursor)
            rest = [
                event
                async for event in wire.astream_background(
                    client, **request(server, prompt), resume=resume
                )
            ]
        texts = [first.text] + [event.text for event in rest if isinstance(event, TextDelta)]
        assert "".join(texts) == reply_text(prompt, 8)
        assert isinstance(rest[-1], Finish)

    asyncio.run(main(openai_server))


def test_max_output_tokens_finishes_with_length(openai_server):
    with httpx.Client() as client:
        events = list(
            wire.stream_background(
                client, **request(openai_server, "Story [sim:tokens=9]", max_tokens=3)
            )
        )
    assert sum(isinstance(event, TextDelta) for event in events) == 3
    assert events[-1].reason == "length"


def test_a_failed_response_raises(openai_server):
    prompt = "Story [sim:tokens=5 stream_error_after=2 message=boom]"
    with httpx.Client() as client, pytest.raises(ProviderError, match="boom") as caught:
        list(wire.stream_background(client, **request(openai_server, prompt)))
    assert caught.value.retryable


def test_an_http_error_raises(openai_server):
    with httpx.Client() as client, pytest.raises(ProviderError) as caught:
        list(wire.stream_background(client, **request(openai_server, "hi [sim:status=429]")))
    assert (caught.value.status, caught.value.retryable) == (429, True)


def test_retrieve_and_cancel(openai_server):
    prompt = "Story [sim:tokens=200 token_delay=0.01]"
    where = {"provider": "sim", "api_base": openai_server.url, "api_key": KEY}
    with httpx.Client() as client:
        stream = wire.stream_background(client, **request(openai_server, prompt))
        resumable = next(stream)
        stream.close()
        found = openai_responses.retrieve(client, **where, response_id=resumable.response_id)
        assert found["status"] in ("queued", "in_progress")
        cancelled = openai_responses.cancel(client, **where, response_id=resumable.response_id)
        assert cancelled["status"] == "cancelled"
        with pytest.raises(ProviderError, match="before completion"):
            list(
                wire.stream_background(
                    client, **request(openai_server, prompt), resume=(resumable.response_id, 0)
                )
            )
        with pytest.raises(ProviderError) as caught:
            openai_responses.retrieve(client, **where, response_id="resp_unknown")
        assert caught.value.status == 404


def test_requests_as_data():
    created = openai_responses.background_request(
        api_base="https://api.example/v1/",
        api_key=KEY,
        model="m",
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        options={"max_tokens": 5, "temperature": 0.2},
    )
    assert (created.method, created.url) == ("POST", "https://api.example/v1/responses")
    assert created.body == {
        "max_output_tokens": 5,
        "temperature": 0.2,
        "model": "m",
        "input": [{"role": "user", "content": "U"}],
        "instructions": "S",
        "background": True,
        "stream": True,
        "store": True,
    }
    resumed = openai_responses.resume_request(
        api_base="https://api.example/v1", api_key=KEY, response_id="resp_1", starting_after=7
    )
    assert (resumed.method, resumed.body) == ("GET", {})
    assert resumed.url == "https://api.example/v1/responses/resp_1?stream=true&starting_after=7"
