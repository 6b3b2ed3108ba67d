"""What the three protocol clients share: opening a streamed request, getting JSON, decoding
SSE and JSON — each turning every failure into a classified ProviderError — and building
URLs and model entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from . import errors


@contextmanager
def open_stream(
    client: httpx.Client,
    url: str,
    *,
    provider: str,
    api_key: str | None,
    headers: dict[str, str],
    body: dict[str, Any],
) -> Iterator[httpx.Response]:
    """POST ``body`` and give the 2xx response, unread; the response is closed on exit, which
    drops the connection at once when the stream was not read to the end. Transport errors
    raised while the caller reads the response are converted too."""
    try:
        with client.stream("POST", url, headers=headers, json=body) as response:
            if not response.is_success:
                response.read()
                raise errors.from_response(provider, response, api_key)
            yield response
    except httpx.RequestError as error:
        raise errors.from_transport(provider, error, api_key) from error


def get_object(
    client: httpx.Client,
    url: str,
    *,
    provider: str,
    api_key: str | None,
    headers: dict[str, str],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """GET a JSON object."""
    try:
        response = client.get(url, headers=headers, params=params)
    except httpx.RequestError as error:
        raise errors.from_transport(provider, error, api_key) from error
    if not response.is_success:
        raise errors.from_response(provider, response, api_key)
    return decode_object(response.text, provider=provider, api_key=api_key)


def sse_events(
    response: httpx.Response,
    *,
    provider: str,
    api_key: str | None,
) -> Iterator[ServerSentEvent]:
    """The response's server-sent events; a response that is not an event stream is
    malformed (httpx_sse reports it as a transport error, which would read as retryable)."""
    try:
        yield from EventSource(response).iter_sse()
    except SSEError as error:
        raise errors.malformed(provider, str(error), api_key) from error


def read_to_the_end(rest: Iterator[Any]) -> None:
    """Consume what follows a stream's terminal event (normally just the end of the body), as
    the official SDKs do: a response closed unread drops its pooled connection, and the next
    request pays a new TCP and TLS handshake. The reply is complete by then, so a failure
    here only costs the connection."""
    try:
        for _ in rest:
            pass
    except (errors.ProviderError, httpx.HTTPError):
        pass


def decode_json(text: str, *, provider: str, api_key: str | None) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise errors.malformed(provider, f"invalid JSON {text[:100]!r}", api_key) from error


def decode_object(text: str, *, provider: str, api_key: str | None) -> dict[str, Any]:
    """A JSON object (a stream's chunk, event or line)."""
    data = decode_json(text, provider=provider, api_key=api_key)
    if not isinstance(data, dict):
        raise errors.malformed(provider, f"expected a JSON object, got {text[:100]!r}", api_key)
    return data


def endpoint(api_base: str, path: str) -> str:
    return api_base.rstrip("/") + path


def model_entry(name: str) -> dict[str, str]:
    """A model as ``list_models`` returns it; its use guessed from its name."""
    return {"name": name, "model_use": "embedding" if "embed" in name.lower() else "chat"}
