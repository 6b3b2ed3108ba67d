"""Classifying provider failures and describing them without ever showing the API key."""

from __future__ import annotations

import email.utils
import pickle

import httpx
import pytest

from addons.llm_thread.wire import errors
from addons.llm_thread.wire.errors import ProviderError
from core.redaction import REDACTED

KEY = "sk-live-abcdef0123456789"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        (418, False),
        (408, True),
        (409, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (529, True),
    ],
)
def test_status_classification(status, retryable):
    assert errors.is_retryable_status(status) is retryable


def test_retry_after_in_seconds_milliseconds_or_http_date():
    now = 1_700_000_000.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)

    assert errors.parse_retry_after({"Retry-After": "2"}) == 2.0
    assert errors.parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert errors.parse_retry_after({"Retry-After": http_date}, now=now) == 30.0
    assert errors.parse_retry_after({"Retry-After": "soon"}) is None
    assert errors.parse_retry_after({}) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "Bad model", "type": "invalid_request_error", "code": null}}',
        b'{"type": "error", "error": {"type": "invalid_request_error", "message": "Bad model"}}',
        b'{"error": "Bad model"}',
        b"Bad model",
    ],
    ids=["openai", "anthropic", "ollama", "text"],
)
def test_the_providers_message_is_found_in_each_error_shape(body):
    assert errors.error_message(body) == "Bad model"


def test_a_response_error_reads_status_message_and_retry_after():
    response = httpx.Response(
        503, headers={"Retry-After": "7"}, json={"error": {"message": "Try later"}}
    )

    error = errors.from_response("p", response, api_key=None)
    assert (error.status, error.kind, error.retry_after, error.message) == (
        503,
        "retryable",
        7.0,
        "Try later",
    )
    assert str(error) == (
        "Provider 'p' failed: HTTP 503 Service Unavailable: Try later (retryable, retry after 7s)"
    )


def test_in_stream_errors_are_retryable_unless_they_blame_the_request():
    overloaded = errors.from_stream_error(
        "p", {"type": "overloaded_error", "message": "Overloaded"}, None
    )
    invalid = errors.from_stream_error(
        "p", {"type": "invalid_request_error", "message": "Too long"}, None
    )
    plain = errors.from_stream_error("p", "model runner crashed", None)

    assert (overloaded.kind, overloaded.message) == (
        "retryable",
        "Error in the stream: overloaded_error: Overloaded",
    )
    assert invalid.kind == "permanent"
    assert (plain.kind, plain.message) == ("retryable", "Error in the stream: model runner crashed")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "retryable"),
        (httpx.ConnectTimeout("timed out"), "retryable"),
        (httpx.ReadTimeout("timed out"), "retryable"),
        (httpx.WriteTimeout("timed out"), "retryable"),
        (httpx.PoolTimeout("timed out"), "retryable"),
        (httpx.ReadError("Connection reset by peer"), "retryable"),
        (httpx.RemoteProtocolError("peer closed connection"), "retryable"),
        (httpx.UnsupportedProtocol("Request URL is missing a scheme"), "permanent"),
        (httpx.DecodingError("bad gzip"), "permanent"),
    ],
)
def test_transport_errors(error, kind):
    assert errors.from_transport("p", error, api_key=None).kind == kind


def test_the_key_is_scrubbed_from_every_text():
    echoed = httpx.Response(401, json={"error": {"message": f"Incorrect API key {KEY}"}})
    transport = httpx.ConnectError(f"cannot reach https://{KEY}@example.invalid")

    for error in (
        errors.from_response("p", echoed, api_key=KEY),
        errors.from_transport("p", transport, api_key=KEY),
        errors.from_stream_error("p", {"message": KEY}, api_key=KEY),
        errors.malformed("p", f"invalid JSON {KEY!r}", api_key=KEY),
    ):
        for text in (str(error), repr(error), error.message, *map(str, error.args)):
            assert KEY not in text
        assert REDACTED in error.message


def test_provider_errors_pickle():
    error = ProviderError("p", "Rate limited", status=429, retryable=True, retry_after=2.0)

    copy = pickle.loads(pickle.dumps(error))
    assert (copy.provider, copy.message, copy.status, copy.retryable, copy.retry_after) == (
        "p",
        "Rate limited",
        429,
        True,
        2.0,
    )
    assert str(copy) == str(error)
