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
        self.shapes = transport.Shapes(provider, api_key)
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
            self.metadata.update(transport.metadata(chunk, _METADATA))
        shapes, found = self.shapes, []
        for choice in shapes.list(chunk.get("choices"), "choices"):
            choice = shapes.object(choice, "a choice")
            delta = shapes.object(choice.get("delta"), "a choice's delta")
            content = shapes.text(delta.get("content"), "a delta's content")
            if content:
                found.append(TextDelta(content))
            reason = shapes.text(choice.get("finish_reason"), "finish_reason")
            self.finish_reason = reason or self.finish_reason
        usage = shapes.object(chunk.get("usage"), "usage")
        if usage:
            details = shapes.object(usage.get("prompt_tokens_details"), "prompt_tokens_details")
            self.usage = Usage(
                transport.count(usage.get("prompt_tokens")),
                transport.count(usage.get("completion_tokens")),
                transport.count(details.get("cached_tokens")),
            )
        return found

    def finish(self) -> list[StreamEvent]:
        if not self.done:
            raise errors.incomplete(self.provider)
        usage = [self.usage] if self.usage is not None else []
        return [*usage, Finish(self.finish_reason, self.metadata)]
