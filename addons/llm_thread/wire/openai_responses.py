"""OpenAI's Responses API in background mode: a reply the provider goes on generating
without the connection, so a reader that lost its stream re-attaches instead of paying for a
new generation.

``POST {api_base}/responses`` (background, streamed, stored) answers SSE events numbered by
``sequence_number``: ``response.created`` (the response id: ``Resumable``), one
``response.output_text.delta`` per piece of text (``TextDelta`` with its number as cursor),
then ``response.completed``, or ``response.incomplete`` / ``response.failed`` / ``error``.
``GET {api_base}/responses/{id}?stream=true&starting_after=N`` replays the events after N,
then follows live ones. ``retrieve`` and ``cancel`` read and stop a response. A cancelled
response's stream just ends: an incomplete stream, as a cut is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from . import errors, transport
from .events import Finish, Resumable, StreamEvent, TextDelta, Usage

_METADATA = ("id", "model")
_OPTIONS = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}


def background_request(
    *,
    api_base: str,
    api_key: str | None,
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any] | None = None,
) -> transport.ChatRequest:
    """Create one background response and stream it; system messages become
    ``instructions``, the others the ``input``."""
    system = [message for message in messages if message.get("role") == "system"]
    body: dict[str, Any] = {
        **{_OPTIONS.get(name, name): value for name, value in (options or {}).items()},
        "model": model,
        "input": [message for message in messages if message.get("role") != "system"],
        "background": True,
        "stream": True,
        "store": True,
    }
    if system:
        body["instructions"] = "\n\n".join(str(message.get("content") or "") for message in system)
    return transport.ChatRequest(
        transport.endpoint(api_base, "/responses"), _headers(api_key), body
    )


def resume_request(
    *, api_base: str, api_key: str | None, response_id: str, starting_after: int
) -> transport.ChatRequest:
    """Re-attach to background response ``response_id``: its events after ``starting_after``
    (a cursor), then the live ones."""
    url = transport.endpoint(
        api_base, f"/responses/{quote(response_id, safe='')}?stream=true&starting_after="
    )
    return transport.ChatRequest(f"{url}{starting_after}", _headers(api_key), {}, method="GET")


def retrieve(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, response_id: str
) -> dict[str, Any]:
    """The Response object now (status queued, in_progress, completed, cancelled...)."""
    return transport.get_object(
        client,
        _response_url(api_base, response_id),
        provider=provider,
        api_key=api_key,
        headers=_auth(api_key),
    )


def cancel(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, response_id: str
) -> dict[str, Any]:
    """Stop a background response's generation; the Response object, status cancelled."""
    return transport.post_object(
        client,
        _response_url(api_base, response_id) + "/cancel",
        provider=provider,
        api_key=api_key,
        headers=_auth(api_key),
    )


def _response_url(api_base: str, response_id: str) -> str:
    return transport.endpoint(api_base, f"/responses/{quote(response_id, safe='')}")


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _headers(api_key: str | None) -> dict[str, str]:
    return {**_auth(api_key), "Accept": "text/event-stream"}


class Decoder:
    """Responses events until ``response.completed`` (or an incomplete one cut by
    max_output_tokens: finish reason "length"); usage and finish at the end."""

    def __init__(self, provider: str, api_key: str | None):
        self.provider, self.api_key = provider, api_key
        self.shapes = transport.Shapes(provider, api_key)
        self.done = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.metadata: dict[str, Any] = {}

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        data = transport.decode_object(event.data, provider=self.provider, api_key=self.api_key)
        kind = self.shapes.text(data.get("type"), "an event's type") or event.event
        cursor = transport.count(data.get("sequence_number"))
        response = self.shapes.object(data.get("response"), "an event's response")
        self.metadata.update(transport.metadata(response, _METADATA))
        if kind == "response.created":
            found = "id" in self.metadata
            return [Resumable(self.metadata["id"], cursor or 0)] if found else []
        if kind == "response.output_text.delta":
            text = self.shapes.text(data.get("delta"), "a delta")
            return [TextDelta(text, cursor)] if text else []
        if kind == "response.completed":
            self._end(response, "stop")
        elif kind == "response.incomplete":
            self._incomplete(response)
        elif kind == "response.failed":
            raise self._error(self.shapes.object(response.get("error"), "a response's error"))
        elif kind == "error":
            raise self._error(data)
        return []

    def _end(self, response: dict[str, Any], reason: str) -> None:
        self.done, self.finish_reason = True, reason
        usage = self.shapes.object(response.get("usage"), "usage")
        if usage:
            self.usage = Usage(
                transport.count(usage.get("input_tokens")),
                transport.count(usage.get("output_tokens")),
            )

    def _incomplete(self, response: dict[str, Any]) -> None:
        """Cut by max_output_tokens: a reply of the length asked for; any other reason (a
        content filter) is a failure that trying again does not mend."""
        details = self.shapes.object(response.get("incomplete_details"), "incomplete_details")
        reason = self.shapes.text(details.get("reason"), "an incomplete reason")
        if reason == "max_output_tokens":
            self._end(response, "length")
            return
        raise errors.ProviderError(
            self.provider,
            f"The response is incomplete: {reason or 'no reason given'}",
            retryable=False,
            api_key=self.api_key,
        )

    def _error(self, error: dict[str, Any]) -> errors.ProviderError:
        """Responses errors name their kind in ``code``: classified as an error type."""
        return errors.from_stream_error(
            self.provider,
            {"type": error.get("code"), "message": error.get("message")},
            self.api_key,
        )

    def finish(self) -> list[StreamEvent]:
        if not self.done:
            raise errors.incomplete(self.provider)
        usage = [self.usage] if self.usage is not None else []
        return [*usage, Finish(self.finish_reason, self.metadata)]
