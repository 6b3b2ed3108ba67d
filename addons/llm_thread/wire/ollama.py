"""Ollama's native API: ``POST {api_base}/api/chat`` streamed as NDJSON (one JSON object per
line, the last with ``done: true``), and ``GET {api_base}/api/tags``. ``api_base`` is the
server's root, e.g. ``http://127.0.0.1:11434``."""

from __future__ import annotations

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


def chat_request(
    *,
    api_base: str,
    api_key: str | None,
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any] | None = None,
) -> transport.ChatRequest:
    """One streamed reply. ``options`` go to Ollama's ``options`` (``max_tokens`` becomes
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
    return transport.ChatRequest(url, _auth(api_key), body, framing="ndjson")


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


class Decoder:
    """One JSON object per line until the one with ``done: true``, which carries the
    usage, the finish reason and the timings."""

    def __init__(self, provider: str, api_key: str | None):
        self.provider, self.api_key = provider, api_key
        self.shapes = transport.Shapes(provider, api_key)
        self.done = False
        self.last: dict[str, Any] = {}

    def feed(self, line: str) -> list[StreamEvent]:
        if not line.strip():
            return []
        data = transport.decode_object(line, provider=self.provider, api_key=self.api_key)
        if data.get("error"):
            raise errors.from_stream_error(self.provider, data["error"], self.api_key)
        self.last, self.done = data, bool(data.get("done"))
        message = self.shapes.object(data.get("message"), "message")
        content = self.shapes.text(message.get("content"), "a message's content")
        return [TextDelta(content)] if content else []

    def finish(self) -> list[StreamEvent]:
        if not self.done:
            raise errors.incomplete(self.provider)
        data = self.last
        return [
            Usage(
                transport.count(data.get("prompt_eval_count")),
                transport.count(data.get("eval_count")),
            ),
            Finish(
                self.shapes.text(data.get("done_reason"), "done_reason"),
                transport.metadata(data, _FINAL_METADATA),
            ),
        ]
