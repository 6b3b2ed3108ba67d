"""Anthropic Messages over HTTP: ``POST {api_base}/messages`` streamed as SSE (message_start,
content_block_*, message_delta, message_stop; ping and error anywhere), and
``GET {api_base}/models``. ``api_base`` includes the version, e.g.
``https://api.anthropic.com/v1``."""

from __future__ import annotations

from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from . import errors, transport
from .events import Finish, StreamEvent, TextDelta, Usage

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_INPUT_TOKEN_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def chat_request(
    *,
    api_base: str,
    api_key: str | None,
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any] | None = None,
) -> transport.ChatRequest:
    """One streamed reply. System messages go to the top-level ``system`` field and tool
    messages are sent as user turns (the API has neither role); ``options`` are extra request
    fields, ``max_tokens`` (required by the API) defaulting to DEFAULT_MAX_TOKENS."""
    options = options or {}
    body: dict[str, Any] = {
        **options,
        "model": model,
        "max_tokens": options.get("max_tokens", DEFAULT_MAX_TOKENS),
        "messages": [
            {
                "role": "assistant" if message["role"] == "assistant" else "user",
                "content": message["content"],
            }
            for message in messages
            if message["role"] != "system"
        ],
        "stream": True,
    }
    system = [message["content"] for message in messages if message["role"] == "system"]
    if system:
        body["system"] = "\n\n".join(system)
    headers = {**_headers(api_key), "Accept": "text/event-stream"}
    return transport.ChatRequest(transport.endpoint(api_base, "/messages"), headers, body)


def list_models(
    client: httpx.Client,
    *,
    provider: str,
    api_base: str,
    api_key: str | None,
) -> list[dict[str, str]]:
    """Every page of ``GET /models``."""
    models: list[dict[str, str]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = transport.get_object(
            client,
            transport.endpoint(api_base, "/models"),
            provider=provider,
            api_key=api_key,
            headers=_headers(api_key),
            params=params,
        )
        models += [
            transport.model_entry(model["id"])
            for model in page.get("data") or ()
            if isinstance(model, dict) and model.get("id")
        ]
        if not (page.get("has_more") and page.get("last_id")):
            return models
        params["after_id"] = page["last_id"]


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


class Decoder:
    """message_start, content_block_* and message_delta events until message_stop (ping
    ignored, error anywhere); usage and finish at the end."""

    def __init__(self, provider: str, api_key: str | None):
        self.provider, self.api_key = provider, api_key
        self.shapes = transport.Shapes(provider, api_key)
        self.done = False
        self.started = False
        self.stop_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.metadata: dict[str, Any] = {}

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        if event.event == "ping":
            return []
        data = transport.decode_object(event.data, provider=self.provider, api_key=self.api_key)
        kind = data.get("type") or event.event
        if kind == "error":
            raise errors.from_stream_error(self.provider, data.get("error"), self.api_key)
        shapes = self.shapes
        if kind == "message_start":
            self.started = True
            message = shapes.object(data.get("message"), "message_start's message")
            self.metadata.update(transport.metadata(message, ("id", "model")))
            usage = shapes.object(message.get("usage"), "message_start's usage")
            counts = [transport.count(usage.get(name)) for name in _INPUT_TOKEN_FIELDS]
            counts = [count for count in counts if count is not None]
            self.prompt_tokens = sum(counts) if counts else None
            self.cached_tokens = transport.count(usage.get("cache_read_input_tokens"))
        elif not self.started:
            raise errors.malformed(
                self.provider, f"'{kind}' event before message_start", self.api_key
            )
        elif kind == "content_block_delta":
            delta = shapes.object(data.get("delta"), "content_block_delta's delta")
            if delta.get("type") == "text_delta":
                text = shapes.text(delta.get("text"), "a text_delta's text")
                if text:
                    return [TextDelta(text)]
        elif kind == "message_delta":
            delta = shapes.object(data.get("delta"), "message_delta's delta")
            reason = shapes.text(delta.get("stop_reason"), "stop_reason")
            self.stop_reason = reason or self.stop_reason
            usage = shapes.object(data.get("usage"), "message_delta's usage")
            output = transport.count(usage.get("output_tokens"))
            self.completion_tokens = output if output is not None else self.completion_tokens
        elif kind == "message_stop":
            self.done = True
        return []

    def finish(self) -> list[StreamEvent]:
        if not self.done:
            raise errors.incomplete(self.provider)
        return [
            Usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens),
            Finish(self.stop_reason, self.metadata),
        ]
