"""What the three protocol clients share: a streamed request described as data, driven
either synchronously (``stream``, for direct generation) or asynchronously (``astream``, for
the worker's streams) through the protocol's decoder, every failure turned into a classified
ProviderError; getting JSON; decoding; building URLs and model entries.

A protocol module is sans-IO: ``chat_request(...)`` says what to send, and its ``Decoder``
turns what comes back (server-sent events or NDJSON lines) into stream events. The two
drivers do the I/O the same way: open the stream, feed the decoder until its terminal event,
read the rest of the body (so the connection goes back to the pool), then give the decoder's
final events (usage, finish). Before the first item, they yield the provider's requests
limit read from the response headers (``RateLimit``), when these report one. Decoders read
the values they use through ``Shapes``: one of the wrong type is a malformed stream, and
texts come out storable (``clean_text``).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from . import errors
from .events import StreamEvent
from .rate_limits import rate_limit


@dataclass(frozen=True)
class ChatRequest:
    """A streamed chat request: where, with which headers and body, and how the answer is
    framed ("sse": server-sent events; "ndjson": one JSON object per line). A GET (resuming
    a stream) sends no body."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    framing: str = "sse"
    method: str = "POST"

    def build(self, client: httpx.Client | httpx.AsyncClient, **extra: Any) -> httpx.Request:
        """The HTTP request (``extra``: httpx options such as timeout)."""
        body = {"json": self.body} if self.method == "POST" else {}
        return client.build_request(self.method, self.url, headers=self.headers, **body, **extra)


class Decoder(Protocol):
    """A protocol's parser of one streamed answer."""

    done: bool  # the terminal event was seen

    def feed(self, item: ServerSentEvent | str) -> list[StreamEvent]:
        """The events of one SSE event or NDJSON line (raises ProviderError)."""

    def finish(self) -> list[StreamEvent]:
        """The final events, once ``done`` (ProviderError when the stream was cut)."""


def stream(
    client: httpx.Client,
    request: ChatRequest,
    decoder: Decoder,
    *,
    provider: str,
    api_key: str | None,
) -> Iterator[StreamEvent]:
    """Send ``request`` and yield its events (closing the generator closes the response)."""
    with _open(client, request, provider, api_key) as response:
        limit = rate_limit(response.headers)
        if limit is not None:
            yield limit
        try:
            items = _items(response, request.framing)
            for item in items:
                yield from decoder.feed(item)
                if decoder.done:
                    break
            if decoder.done:
                _read_to_the_end(items)
        except SSEError as error:
            raise errors.malformed(provider, str(error), api_key) from error
        except httpx.RequestError as error:
            raise errors.from_transport(provider, error, api_key) from error
    yield from decoder.finish()


async def astream(
    client: httpx.AsyncClient,
    request: ChatRequest,
    decoder: Decoder,
    *,
    provider: str,
    api_key: str | None,
    timeout: float | None = None,
) -> AsyncIterator[StreamEvent]:
    """``stream`` on an asynchronous client; ``timeout`` bounds each read."""
    async with _aopen(client, request, provider, api_key, timeout) as response:
        limit = rate_limit(response.headers)
        if limit is not None:
            yield limit
        try:
            items = _aitems(response, request.framing)
            async for item in items:
                for event in decoder.feed(item):
                    yield event
                if decoder.done:
                    break
            if decoder.done:
                await _aread_to_the_end(items)
        except SSEError as error:
            raise errors.malformed(provider, str(error), api_key) from error
        except httpx.RequestError as error:
            raise errors.from_transport(provider, error, api_key) from error
    for event in decoder.finish():
        yield event


# A pooled keep-alive connection the server closed while it sat idle fails the next request
# before any byte of an answer (a reset, or "disconnected without sending a response"): the
# request never reached the server, so it is sent once more, on a new connection.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@contextmanager
def _open(client: httpx.Client, request: ChatRequest, provider: str, api_key: str | None):
    try:
        for resend in (True, False):
            built = request.build(client)
            try:
                response = client.send(built, stream=True)
                break
            except _STALE_CONNECTION:
                if not resend:
                    raise
        try:
            if not response.is_success:
                response.read()
                raise errors.from_response(provider, response, api_key)
            yield response
        finally:
            response.close()
    except httpx.RequestError as error:
        raise errors.from_transport(provider, error, api_key) from error


@asynccontextmanager
async def _aopen(
    client: httpx.AsyncClient,
    request: ChatRequest,
    provider: str,
    api_key: str | None,
    timeout: float | None,
):
    try:
        for resend in (True, False):
            built = request.build(client, timeout=timeout)
            try:
                response = await client.send(built, stream=True)
                break
            except _STALE_CONNECTION:
                if not resend:
                    raise
        try:
            if not response.is_success:
                await response.aread()
                raise errors.from_response(provider, response, api_key)
            yield response
        finally:
            await response.aclose()
    except httpx.RequestError as error:
        raise errors.from_transport(provider, error, api_key) from error


def _items(response: httpx.Response, framing: str) -> Iterator[Any]:
    return EventSource(response).iter_sse() if framing == "sse" else response.iter_lines()


def _aitems(response: httpx.Response, framing: str) -> AsyncIterator[Any]:
    return EventSource(response).aiter_sse() if framing == "sse" else response.aiter_lines()


def _read_to_the_end(rest: Iterator[Any]) -> None:
    """Consume what follows a stream's terminal event (normally just the end of the body), as
    the official SDKs do: a response closed unread drops its pooled connection, and the next
    request pays a new TCP and TLS handshake. The reply is complete by then, so a failure
    here only costs the connection."""
    try:
        for _ in rest:
            pass
    except (SSEError, httpx.HTTPError):
        pass


async def _aread_to_the_end(rest: AsyncIterator[Any]) -> None:
    try:
        async for _ in rest:
            pass
    except (SSEError, httpx.HTTPError):
        pass


def call(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    provider: str,
    api_key: str | None,
    **request: Any,
) -> httpx.Response:
    """One request that is not streamed (``request``: httpx's headers, params, json,
    content, files, data): its response when it succeeded, else the classified error."""
    try:
        response = client.request(method, url, **request)
    except httpx.RequestError as error:
        raise errors.from_transport(provider, error, api_key) from error
    if not response.is_success:
        raise errors.from_response(provider, response, api_key)
    return response


def call_object(
    client: httpx.Client, method: str, url: str, *, provider: str, api_key: str | None, **request
) -> dict[str, Any]:
    """``call``, its answer read as a JSON object."""
    response = call(client, method, url, provider=provider, api_key=api_key, **request)
    return decode_object(response.text, provider=provider, api_key=api_key)


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
    return call_object(
        client, "GET", url, provider=provider, api_key=api_key, headers=headers, params=params
    )


def post_object(
    client: httpx.Client,
    url: str,
    *,
    provider: str,
    api_key: str | None,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST (``body`` as JSON, if any) and read the JSON object answered."""
    return call_object(
        client, "POST", url, provider=provider, api_key=api_key, headers=headers, json=body
    )


def decode_json(text: str, *, provider: str, api_key: str | None) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
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


class Shapes:
    """Reading the values a decoder uses from a stream's JSON: one of the wrong type is a
    malformed stream (permanent), named by its place (``what``); texts come out storable."""

    def __init__(self, provider: str, api_key: str | None):
        self.provider, self.api_key = provider, api_key

    def object(self, value: Any, what: str) -> dict[str, Any]:
        """A JSON object; absent (None) reads as an empty one."""
        return self._expect(value, dict, "an object", what, {})

    def list(self, value: Any, what: str) -> list[Any]:
        """A JSON array; absent (None) reads as an empty one."""
        return self._expect(value, list, "an array", what, [])

    def text(self, value: Any, what: str) -> str | None:
        """A string (storable: see ``clean_text``), or None."""
        found = self._expect(value, str, "a string", what, None)
        return None if found is None else clean_text(found)

    def _expect(self, value: Any, kind: type, name: str, what: str, empty: Any) -> Any:
        if value is None:
            return empty
        if not isinstance(value, kind):
            shown = json.dumps(value)[:60]
            raise errors.malformed(
                self.provider, f"{what} must be {name}, got {shown}", self.api_key
            )
        return value


def count(value: Any) -> int | None:
    """A token count: a non-negative integer, else None (counts only inform)."""
    return value if type(value) is int and value >= 0 else None


def metadata(data: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` that are set and plain (strings, numbers, booleans), texts made
    storable."""
    found: dict[str, Any] = {}
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            found[key] = clean_text(value)
        elif isinstance(value, int | float) and math.isfinite(value):
            found[key] = value
    return found


def clean_text(text: str) -> str:
    """``text`` with what no database stores as text replaced by U+FFFD: NUL characters and
    lone surrogates (a JSON string may hold both)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
