"""Anthropic Messages over HTTP: ``POST {api_base}/messages`` streamed as SSE (message_start,
content_block_*, message_delta, message_stop; ping and error anywhere), and
``GET {api_base}/models``. ``api_base`` includes the version, e.g.
``https://api.anthropic.com/v1``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from . import errors, transport
from .events import Finish, StreamEvent, TextDelta, Usage

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_INPUT_TOKEN_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def stream_chat(
    client: httpx.Client,
    *,
    provider: str,
    api_base: str,
    api_key: str | None,
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any] | None = None,
) -> Iterator[StreamEvent]:
    """Stream one reply. System messages go to the top-level ``system`` field and tool
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
    url = transport.endpoint(api_base, "/messages")
    with transport.open_stream(
        client, url, provider=provider, api_key=api_key, headers=headers, body=body
    ) as response:
        yield from _events(response, provider, api_key)


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


def _events(
    response: httpx.Response,
    provider: str,
    api_key: str | None,
) -> Iterator[StreamEvent]:
    started = False
    stop_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    metadata: dict[str, Any] = {}
    events = transport.sse_events(response, provider=provider, api_key=api_key)
    for event in events:
        if event.event == "ping":
            continue
        data = transport.decode_object(event.data, provider=provider, api_key=api_key)
        kind = data.get("type") or event.event
        if kind == "error":
            raise errors.from_stream_error(provider, data.get("error"), api_key)
        if kind == "message_start":
            started = True
            message = data.get("message") or {}
            metadata.update({key: message[key] for key in ("id", "model") if message.get(key)})
            usage = message.get("usage") or {}
            counts = [usage[name] for name in _INPUT_TOKEN_FIELDS if usage.get(name) is not None]
            prompt_tokens = sum(counts) if counts else None
        elif not started:
            raise errors.malformed(provider, f"'{kind}' event before message_start", api_key)
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield TextDelta(delta["text"])
        elif kind == "message_delta":
            stop_reason = (data.get("delta") or {}).get("stop_reason") or stop_reason
            completion_tokens = (data.get("usage") or {}).get("output_tokens", completion_tokens)
        elif kind == "message_stop":
            break
    else:
        raise errors.incomplete(provider)
    transport.read_to_the_end(events)
    yield Usage(prompt_tokens, completion_tokens)
    yield Finish(stop_reason, metadata)
