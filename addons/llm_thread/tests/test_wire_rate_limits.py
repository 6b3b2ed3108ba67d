"""The providers' requests limit as the wire clients read it, through the simulator over real
loopback HTTP: a ``RateLimit`` event before the reply (OpenAI's and Anthropic's header
formats, sync and async drivers), none without the headers, and a 429 ``ProviderError``
carrying its Retry-After with what is left of the window. The header parsing itself is
checked on its own too, malformed values included: a provider's odd header must never fail a
reply that succeeded."""

from __future__ import annotations

import asyncio
import pickle

import httpx
import pytest

from addons.llm_thread.wire import (
    Finish,
    ProviderError,
    RateLimit,
    TextDelta,
    astream_chat,
    stream_chat,
)
from addons.llm_thread.wire.rate_limits import go_duration_seconds, moment_seconds, rate_limit

from .test_wire import MODELS

NOW = 1_700_000_000.0


def request_of(server, text: str = "Hi") -> dict:
    return {
        "provider": "p",
        "api_base": server.url,
        "api_key": None,
        "model": MODELS[server.protocol],
        "messages": [{"role": "user", "content": text}],
    }


def sync_events(server, text: str = "Hi") -> list:
    with httpx.Client(timeout=5) as client:
        return list(stream_chat(server.protocol, client, **request_of(server, text)))


def async_events(server, text: str = "Hi") -> list:
    async def run() -> list:
        async with httpx.AsyncClient(timeout=5) as client:
            return [
                e async for e in astream_chat(server.protocol, client, **request_of(server, text))
            ]

    return asyncio.run(run())


def assert_about_a_minute(seconds: float | None) -> None:
    """The window is full again a minute after the last request (Anthropic's reset is a
    moment to the second, rounded up)."""
    assert seconds is not None and 58.5 <= seconds <= 61.0


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("collect", [sync_events, async_events], ids=["sync", "async"])
def test_a_rate_limit_event_comes_first(make_simulator, protocol, collect):
    server = make_simulator(protocol, rpm_limit=5, tokens=3)

    first, second = collect(server), collect(server)

    for events, remaining in ((first, 4), (second, 3)):
        limit = events[0]
        assert isinstance(limit, RateLimit)
        assert (limit.limit_requests, limit.remaining_requests) == (5, remaining)
        assert_about_a_minute(limit.reset_seconds)
        assert [type(e) for e in events[1:4]] == [TextDelta] * 3
        assert isinstance(events[-1], Finish)
        assert sum(isinstance(e, RateLimit) for e in events) == 1


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama"])
def test_no_rate_limit_event_without_the_headers(make_simulator, protocol):
    server = make_simulator(protocol, max_in_flight=5, tokens=2)  # no rpm limit: no headers

    assert not any(isinstance(e, RateLimit) for e in sync_events(server))
    assert not any(isinstance(e, RateLimit) for e in async_events(server))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("collect", [sync_events, async_events], ids=["sync", "async"])
def test_a_429_carries_retry_after_and_the_window(make_simulator, protocol, collect):
    server = make_simulator(protocol, rpm_limit=1, tokens=2)
    collect(server)

    with pytest.raises(ProviderError) as caught:
        collect(server)

    error = caught.value
    assert (error.status, error.retryable) == (429, True)
    assert error.retry_after is not None and 55 <= error.retry_after <= 60
    assert error.remaining_requests == 0
    assert_about_a_minute(error.reset_seconds)
    copy = pickle.loads(pickle.dumps(error))  # errors cross process boundaries
    assert (copy.remaining_requests, copy.reset_seconds) == (0, error.reset_seconds)
    assert copy.retry_after == error.retry_after


def test_a_429_over_max_in_flight_asks_for_a_second(make_simulator):
    server = make_simulator("openai", max_in_flight=1, tokens=3, token_delay=0.2)

    async def run() -> ProviderError:
        async with httpx.AsyncClient(timeout=5) as client:
            slow = astream_chat("openai", client, **request_of(server))
            await anext(slow)  # the slow stream holds the one slot
            try:
                with pytest.raises(ProviderError) as caught:
                    async for _ in astream_chat("openai", client, **request_of(server)):
                        pass
            finally:
                await slow.aclose()
            return caught.value

    error = asyncio.run(run())
    assert (error.status, error.retry_after) == (429, 1.0)
    assert (error.remaining_requests, error.reset_seconds) == (None, None)  # no rpm limit


def test_other_errors_have_no_window_without_headers(make_simulator):
    server = make_simulator("anthropic", tokens=2)
    with pytest.raises(ProviderError) as caught:
        sync_events(server, "Hi [sim:status=429 retry_after=3]")
    error = caught.value
    assert (error.status, error.retry_after) == (429, 3.0)
    assert (error.remaining_requests, error.reset_seconds) == (None, None)


# -- the headers on their own ---------------------------------------------------------------


def test_openai_headers():
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
    }
    assert rate_limit(headers) == RateLimit(500, 499, 0.12)


def test_anthropic_headers():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:14:00Z",
    }
    assert rate_limit(headers, now=NOW) == RateLimit(50, 0, 1_700_000_040.0 - NOW)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("17.28s", 17.28),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("20ms", 0.02),
        ("1m30s", 90.0),
        ("0s", 0.0),
        ("2", 2.0),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s2", None),
        ("-1s", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_go_durations(text, seconds):
    found = go_duration_seconds(text)
    if seconds is None:
        assert found is None
    else:
        assert found == pytest.approx(seconds)


def test_reset_moments():
    assert moment_seconds("2023-11-14T22:14:00Z", now=NOW) == 40.0
    assert moment_seconds("2023-11-14T23:14:00+01:00", now=NOW) == 40.0
    assert moment_seconds("2023-11-14T22:00:00Z", now=NOW) == 0.0  # passed: no wait
    assert moment_seconds("2023-11-14T22:14:00", now=NOW) is None  # no timezone
    assert moment_seconds("tomorrow", now=NOW) is None


def test_malformed_values_are_ignored():
    headers = {
        "x-ratelimit-limit-requests": "many",
        "x-ratelimit-remaining-requests": "-3",
        "x-ratelimit-reset-requests": "1s",
    }
    assert rate_limit(headers) == RateLimit(None, None, 1.0)
    assert rate_limit({"x-ratelimit-limit-requests": "lots"}) is None
    arabic_digits = httpx.Headers({"anthropic-ratelimit-requests-remaining": "١٢".encode()})
    assert rate_limit(arabic_digits) is None  # digits, but not what HTTP's integers are
    assert rate_limit({"content-type": "text/event-stream"}) is None
