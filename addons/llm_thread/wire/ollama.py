"""Ollama's native API: ``POST {api_base}/api/chat`` streamed as NDJSON (one JSON object per
line, the last with ``done: true``), and ``GET {api_base}/api/tags``. ``api_base`` is the
server's root, e.g. ``http://127.0.0.1:11434``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from . import errors, transport
from .events import Finish, StreamEvent, TextDelta, Usage

# Request fields that stay at the top level; every other option is a model option.
TOP_LEVEL_FIELDS = frozenset({"format", "keep_alive", "think", "tools"})
_FINAL_METADATA = (
    "model",
    "created_at",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)


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
    """Stream one reply. ``options`` go to Ollama's ``options`` (``max_tokens`` becomes
    ``num_predict``), except TOP_LEVEL_FIELDS. The API has no keys of its own; one given is
    sent as a bearer token, for servers behind an authenticating proxy."""
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    model_options: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if name in TOP_LEVEL_FIELDS:
            body[name] = value
        else:
            model_options["num_predict" if name == "max_tokens" else name] = value
    if model_options:
        body["options"] = model_options
    url = transport.endpoint(api_base, "/api/chat")
    with transport.open_stream(
        client, url, provider=provider, api_key=api_key, headers=_auth(api_key), body=body
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
        transport.endpoint(api_base, "/api/tags"),
        provider=provider,
        api_key=api_key,
        headers=_auth(api_key),
    )
    return [
        transport.model_entry(model["name"])
        for model in data.get("models") or ()
        if isinstance(model, dict) and model.get("name")
    ]


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _events(
    response: httpx.Response,
    provider: str,
    api_key: str | None,
) -> Iterator[StreamEvent]:
    lines = response.iter_lines()
    for line in lines:
        if not line.strip():
            continue
        data = transport.decode_object(line, provider=provider, api_key=api_key)
        if data.get("error"):
            raise errors.from_stream_error(provider, data["error"], api_key)
        content = (data.get("message") or {}).get("content")
        if content:
            yield TextDelta(content)
        if data.get("done"):
            break
    else:
        raise errors.incomplete(provider)
    transport.read_to_the_end(lines)
    yield Usage(data.get("prompt_eval_count"), data.get("eval_count"))
    yield Finish(
        data.get("done_reason"),
        {key: data[key] for key in _FINAL_METADATA if data.get(key) is not None},
    )
