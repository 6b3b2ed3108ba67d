"""The asynchronous driver of the wire protocols gives what the synchronous one gives — the
same events, the same classified errors — for every protocol and fault; it bounds each read
by its timeout, and a cancelled stream closes its connection at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from addons.llm_thread.wire import PROTOCOLS, Finish, ProviderError, astream_chat, stream_chat

from .test_wire import KEY, MODELS

SCENARIOS = [
    "Tell me a story",
    "Hi [sim:status=429 retry_after=2]",
    "Hi [sim:status=500]",
    "Hi [sim:status=400]",
    "Hi [sim:cut_after=5]",
    "Hi [sim:end_after=4]",
    "Hi [sim:stream_error_after=3]",
    "Hi [sim:malformed_after=2]",
]


@pytest.fixture(params=list(PROTOCOLS))
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def request_of(server, text, **extra):
    return {
        "provider": "p",
        "api_base": server.url,
        "api_key": None,
        "model": MODELS[server.protocol],
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def outcome(events_then_error):
    """(events, error summary) of a finished stream; response ids and times differ from one
    request to the next, so they are left out."""
    events, error = events_then_error
    events = [
        Finish(e.reason, {k: v for k, v in e.metadata.items() if k not in ("id", "created_at")})
        if isinstance(e, Finish)
        else e
        for e in events
    ]
    described = error and (type(error), error.status, error.retryable, error.message)
    return events, described


def sync_outcome(server, text):
    events = []
    with httpx.Client(timeout=5) as client:
        try:
            events.extend(stream_chat(server.protocol, client, **request_of(server, text)))
        except ProviderError as error:
            return outcome((events, error))
    return outcome((events, None))


async def async_collect(client, server, text, **extra):
    events = []
    try:
        async for event in astream_chat(
            server.protocol, client, **request_of(server, text, **extra)
        ):
            events.append(event)
    except ProviderError as error:
        return events, error
    return events, None


def async_outcome(server, text):
    async def run():
        async with httpx.AsyncClient(timeout=5) as client:
            return await async_collect(client, server, text)

    return outcome(asyncio.run(run()))


@pytest.mark.parametrize("text", SCENARIOS)
def test_the_async_driver_gives_what_the_sync_one_gives(server, text):
    assert async_outcome(server, text) == sync_outcome(server, text)


def test_a_slow_read_is_a_retryable_timeout(server):
    async def run():
        async with httpx.AsyncClient() as client:
            return await async_collect(client, server, "Hi [sim:first_token_delay=2]", timeout=0.3)

    events, error = asyncio.run(run())
    assert not events and error.retryable and "Timed out" in error.message


def test_a_cancelled_stream_closes_its_connection_at_once(server):
    async def run():
        async with httpx.AsyncClient(timeout=30) as client:
            task = asyncio.create_task(
                async_collect(client, server, "Hi [sim:first_token_delay=20] think")
            )
            while server.stats()["in_flight"] == 0:
                await asyncio.sleep(0.01)
            task.cancel()  # the provider sends nothing: the read is blocked in the socket
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert server.wait_idle(timeout=5)["disconnects"] == 1


def test_the_key_is_sent_and_never_shown(make_simulator):
    server = make_simulator("openai", api_key=KEY)

    async def run(key):
        async with httpx.AsyncClient(timeout=5) as client:
            return await async_collect(client, server, "Hi", api_key=key)

    events, error = asyncio.run(run(KEY))
    assert events and error is None
    _, error = asyncio.run(run(KEY + "-wrong"))
    assert error.status == 401 and not error.retryable
    assert KEY not in str(error) and KEY not in repr(error)
