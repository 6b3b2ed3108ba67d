"""``ProviderError`` and the rules that classify a provider failure as retryable or permanent.

Retryable: timeouts, connections refused, reset or cut mid-response, HTTP 408, 409, 425, 429
and 5xx, and errors the provider reports in the middle of a stream it had accepted (unless
their type names a caller error). Permanent: every other 4xx, and streams we cannot parse.

The API key must never leak into logs or job records: no text built here includes request
headers, and every message is scrubbed of the key it is given.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from http import HTTPStatus
from typing import Any

import httpx

from core.redaction import redact

from .rate_limits import rate_limit

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
# Error types, in a stream that had started, that blame the request rather than the provider.
PERMANENT_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "invalid_api_key",
    }
)
_MAX_BODY_TEXT = 300
MAX_RETRY_AFTER = 86400.0  # seconds; a longer Retry-After is read as this


class ProviderError(Exception):
    """A provider call failed; ``retryable`` tells whether trying again later may succeed,
    ``retry_after`` how long the provider asked to wait (seconds), if it said.
    ``remaining_requests`` and ``reset_seconds``: the provider's requests limit as its
    error response's headers reported it (see ``rate_limits``; None when they did not), so
    that a 429 tells clients sharing the limit how long the whole window stays spent."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        api_key: str | None = None,
        remaining_requests: int | None = None,
        reset_seconds: float | None = None,
    ):
        self.provider = provider
        self.message = scrub(message, api_key)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.remaining_requests = remaining_requests
        self.reset_seconds = reset_seconds
        super().__init__(self._describe())

    @property
    def kind(self) -> str:
        return "retryable" if self.retryable else "permanent"

    @property
    def summary(self) -> str:
        """What happened, for people: who failed and why (whether it is worth retrying is
        the caller's to say: it knows whether it will)."""
        cause = self.message
        if self.status is not None:
            cause = f"HTTP {_status_line(self.status)}: {cause}"
        return f"Provider '{self.provider}' failed: {cause}"

    def _describe(self) -> str:
        note = self.kind
        if self.retry_after is not None:
            note += f", retry after {self.retry_after:g}s"
        return f"{self.summary} ({note})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours rebuild from their attributes instead.
        return (
            _rebuild,
            (
                self.provider,
                self.message,
                self.retryable,
                self.status,
                self.retry_after,
                self.remaining_requests,
                self.reset_seconds,
            ),
        )

    def __repr__(self) -> str:
        return (
            f"ProviderError(provider={self.provider!r}, status={self.status!r}, "
            f"kind={self.kind!r}, retry_after={self.retry_after!r}, message={self.message!r})"
        )


def _rebuild(
    provider: str,
    message: str,
    retryable: bool,
    status: int | None,
    retry_after: float | None,
    remaining_requests: int | None = None,
    reset_seconds: float | None = None,
) -> ProviderError:
    return ProviderError(
        provider,
        message,
        retryable=retryable,
        status=status,
        retry_after=retry_after,
        remaining_requests=remaining_requests,
        reset_seconds=reset_seconds,
    )


def scrub(text: str, api_key: str | None) -> str:
    """``text`` with ``api_key`` replaced, in every form it may take in it (escaped,
    encoded, stripped: see core.redaction)."""
    return redact(text, api_key)


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(
    headers: httpx.Headers | dict[str, str],
    now: float | None = None,
) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an
    HTTP-date); None when absent or unreadable."""
    headers = httpx.Headers(headers)
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return _bounded(milliseconds / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return _bounded(seconds)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return _bounded(moment.timestamp() - (time.time() if now is None else now))


def _number(text: str | None) -> float | None:
    """A finite number of ``text`` (not NaN, not an infinity), else None."""
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _bounded(seconds: float) -> float:
    """A wait from 0 to MAX_RETRY_AFTER seconds: a provider asking for longer gets a day."""
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def error_message(body: bytes | str) -> str | None:
    """The provider's own message from an error body in any of the three shapes — OpenAI
    ``{"error": {"message"}}``, Anthropic ``{"type": "error", "error": {"type", "message"}}``,
    Ollama ``{"error": "..."}`` — else the start of the body's text, else None."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        data = None
    return _payload_message(data) or text.strip()[:_MAX_BODY_TEXT] or None


def from_response(
    provider: str,
    response: httpx.Response,
    api_key: str | None,
) -> ProviderError:
    """The error for a non-2xx response whose body has been read (with the requests limit
    its headers report, if any: a 429's, mostly)."""
    status = response.status_code
    message = error_message(response.content) or "(no error message)"
    limit = rate_limit(response.headers)
    return ProviderError(
        provider,
        message,
        status=status,
        retryable=is_retryable_status(status),
        retry_after=parse_retry_after(response.headers),
        api_key=api_key,
        remaining_requests=limit.remaining_requests if limit else None,
        reset_seconds=limit.reset_seconds if limit else None,
    )


def from_transport(
    provider: str,
    error: httpx.RequestError,
    api_key: str | None,
) -> ProviderError:
    """The error for a failed connection, read or write: retryable unless the request itself
    cannot be sent (unsupported URL scheme, invalid request)."""
    detail = f"({type(error).__name__}: {error})" if str(error) else f"({type(error).__name__})"
    if isinstance(error, httpx.TimeoutException):
        action = {
            httpx.ConnectTimeout: "connecting to the provider",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(error), "waiting for the provider's response")
        return ProviderError(
            provider, f"Timed out {action} {detail}", retryable=True, api_key=api_key
        )
    if isinstance(error, httpx.ConnectError):
        message, retryable = f"Could not connect to the provider {detail}", True
    elif isinstance(error, httpx.RemoteProtocolError):
        message, retryable = f"The provider closed the connection {detail}", True
    elif isinstance(error, httpx.NetworkError | httpx.ProxyError):
        message, retryable = f"The connection to the provider failed {detail}", True
    elif isinstance(error, httpx.DecodingError):
        message, retryable = f"Malformed response {detail}", False
    else:
        message, retryable = f"The request could not be sent {detail}", False
    return ProviderError(provider, message, retryable=retryable, api_key=api_key)


def from_stream_error(provider: str, payload: Any, api_key: str | None) -> ProviderError:
    """The error for an error event in a stream the provider had accepted: ``payload`` is
    the event's ``error`` value (an object with type and message, or Ollama's string)."""
    error_type = payload.get("type") if isinstance(payload, dict) else None
    message = _payload_message({"error": payload}) or "(no error message)"
    if isinstance(error_type, str):
        message = f"{error_type}: {message}"
    return ProviderError(
        provider,
        f"Error in the stream: {message}",
        retryable=not isinstance(error_type, str) or error_type not in PERMANENT_ERROR_TYPES,
        api_key=api_key,
    )


def malformed(provider: str, detail: str, api_key: str | None) -> ProviderError:
    return ProviderError(
        provider, f"Malformed response stream: {detail}", retryable=False, api_key=api_key
    )


def incomplete(provider: str) -> ProviderError:
    """The stream ended without its terminal marker: the connection was cut."""
    return ProviderError(provider, "The stream ended before completion", retryable=True)


def _payload_message(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, str) and error:
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return error["message"]
    message = data.get("message")
    return message if isinstance(message, str) and message else None


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
