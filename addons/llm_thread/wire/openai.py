"""OpenAI chat completions over HTTP: ``POST {api_base}/chat/completions`` streamed as SSE
(``data: {chunk}`` events, ended by ``data: [DONE]``), and ``GET {api_base}/models``.
``api_base`` includes the version, e.g. ``https://api.openai.com/v1``."""

from __future__ import annotations

from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from . import errors, transport
from .events import Finish, StreamEvent, TextDelta, Usage

_METADATA = ("id", "model", "system_fingerprint")


def chat_request(
    *,
    api_base: str,
    api_key: str | None,
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any] | None = None,
) -> transport.ChatRequest:
    """One streamed reply. ``options`` are extra request fields (temperature, max_tokens...)."""
    body = {
        **(options or {}),
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {**_auth(api_key), "Accept": "text/event-stream"}
    return transport.ChatRequest(transport.endpoint(api_base, "/chat/completions"), headers, body)


def list_models(
    client: httpx.Client,
    *,
    provider: str,
    api_base: str,
    api_key: str | None,
) -> list[dict[str, str]]:
    data = transport.get_object(
        client,
        transport.endpoint(api_base, "/models"),
        provider=provider,
        api_key=api_key,
        headers=_auth(api_key),
    )
    return [
        transport.model_entry(model["id"])
        for model in data.get("data") or ()
        if isinstance(model, dict) and model.get("id")
    ]


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Decoder:
    """``data: {chunk}`` events until ``data: [DONE]``; usage and finish at the end."""

    def __init__(self, provider: str, api_key: str | None):
        self.provider, self.api_key = provider, api_key
        self.done = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.metadata: dict[str, Any] = {}

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        if event.data == "[DONE]":
            self.done = True
            return []
        chunk = transport.decode_object(event.data, provider=self.provider, api_key=self.api_key)
        if chunk.get("error"):
            raise errors.from_stream_error(self.provider, chunk["error"], self.api_key)
        if len(self.metadata) < len(_METADATA):  # the same in every chunk: read until all seen
            self.metadata.update({key: chunk[key] for key in _METADATA if chunk.get(key)})
        found: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                found.append(TextDelta(content))
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if chunk.get("usage"):
            usage = chunk["usage"]
            self.usage = Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        return found

    def finish(self) -> list[StreamEvent]:
        if not self.done:
            raise errors.incomplete(self.provider)
        usage = [self.usage] if self.usage is not None else []
        return [*usage, Finish(self.finish_reason, self.metadata)]
