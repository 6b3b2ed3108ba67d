"""OpenAI chat completions over HTTP: ``POST {api_base}/chat/completions`` streamed as SSE
(``data: {chunk}`` events, ended by ``data: [DONE]``), and ``GET {api_base}/models``.
``api_base`` includes the version, e.g. ``https://api.openai.com/v1``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from . import errors, transport
from .events import Finish, StreamEvent, TextDelta, Usage

_METADATA = ("id", "model", "system_fingerprint")


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
    """Stream one reply. ``options`` are extra request fields (temperature, max_tokens...)."""
    body = {
        **(options or {}),
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {**_auth(api_key), "Accept": "text/event-stream"}
    url = transport.endpoint(api_base, "/chat/completions")
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


def _events(
    response: httpx.Response,
    provider: str,
    api_key: str | None,
) -> Iterator[StreamEvent]:
    finish_reason: str | None = None
    usage: Usage | None = None
    metadata: dict[str, Any] = {}
    events = transport.sse_events(response, provider=provider, api_key=api_key)
    for event in events:
        if event.data == "[DONE]":
            break
        chunk = transport.decode_object(event.data, provider=provider, api_key=api_key)
        if chunk.get("error"):
            raise errors.from_stream_error(provider, chunk["error"], api_key)
        if len(metadata) < len(_METADATA):  # the same in every chunk: read until all seen
            metadata.update({key: chunk[key] for key in _METADATA if chunk.get(key)})
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield TextDelta(content)
            finish_reason = choice.get("finish_reason") or finish_reason
        if chunk.get("usage"):
            usage = Usage(
                chunk["usage"].get("prompt_tokens"), chunk["usage"].get("completion_tokens")
            )
    else:
        raise errors.incomplete(provider)
    transport.read_to_the_end(events)
    if usage is not None:
        yield usage
    yield Finish(finish_reason, metadata)
