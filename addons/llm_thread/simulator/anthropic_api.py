"""The Anthropic Messages dialect: ``POST /v1/messages`` (SSE with ``event:`` lines:
message_start, content_block_start, ping, content_block_delta*, content_block_stop,
message_delta, message_stop; or one ``message`` object) and ``GET /v1/models``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from .dialect import (
    ChatRequest,
    Dialect,
    Generation,
    InvalidRequest,
    bearer_token,
    request_object,
    sse,
    text_of,
    turns_of,
)
from .limits import WindowState

MODELS = ("claude-sim-large", "claude-sim-small")
_CREATED_AT = "2025-01-01T00:00:00Z"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class AnthropicDialect(Dialect):
    name = "anthropic"
    base_path = "/v1"
    chat_path = "/v1/messages"
    models_path = "/v1/models"
    id_prefix = "msg_sim"

    def given_key(self, headers: Any) -> str | None:
        # The SDK's newer versions send the key as a bearer token on some endpoints.
        return headers.get("x-api-key") or bearer_token(headers)

    def unauthorized(self, given: str | None) -> dict[str, Any]:
        return _error(
            "authentication_error",
            "x-api-key header is required" if given is None else "invalid x-api-key",
        )

    def error(self, status: int, message: str) -> dict[str, Any]:
        default = "api_error" if status >= 500 else "invalid_request_error"
        return _error(_ERROR_TYPES.get(status, default), message)

    def parse(self, body: Any) -> ChatRequest:
        body = request_object(body)
        if body.get("max_tokens") is None:
            raise InvalidRequest("max_tokens: Field required")
        turns = turns_of(body.get("messages"))
        system = text_of(body.get("system"))
        if system:
            turns.insert(0, ("system", system))
        return ChatRequest.build(
            body.get("model"), turns, stream=bool(body.get("stream")), max_tokens=body["max_tokens"]
        )

    def start(self, generation: Generation) -> bytes:
        message = {
            **_message(generation, []),
            "stop_reason": None,
            "usage": _usage(generation, output_tokens=1),
        }
        return (
            _event({"type": "message_start", "message": message})
            + _event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            + _event({"type": "ping"})
        )

    def delta(self, generation: Generation, text: str) -> bytes:
        return _event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
        )

    def end(self, generation: Generation) -> bytes:
        return (
            _event({"type": "content_block_stop", "index": 0})
            + _event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _stop_reason(generation), "stop_sequence": None},
                    "usage": {"output_tokens": generation.completion_tokens},
                }
            )
            + _event({"type": "message_stop"})
        )

    def stream_error(self, generation: Generation, message: str | None) -> bytes:
        return _event(_error("overloaded_error", message or "Overloaded"))

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta"\n\n'

    def complete(self, generation: Generation) -> dict[str, Any]:
        return {
            **_message(generation, [{"type": "text", "text": generation.text}]),
            "usage": _usage(generation, output_tokens=generation.completion_tokens),
        }

    def rate_limit_headers(self, window: WindowState) -> dict[str, str]:
        # The moment the limit is fully replenished, to the second (rounded up: never
        # earlier than it is).
        reset = datetime.fromtimestamp(math.ceil(window.now + window.reset_seconds), UTC)
        return {
            "anthropic-ratelimit-requests-limit": str(window.limit),
            "anthropic-ratelimit-requests-remaining": str(window.remaining),
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def models(self) -> dict[str, Any]:
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": model.replace("-", " ").title(),
                "created_at": _CREATED_AT,
            }
            for model in MODELS
        ]
        return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}


def _event(data: dict[str, Any]) -> bytes:
    return sse(data, event=data["type"])


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _message(generation: Generation, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": generation.id,
        "type": "message",
        "role": "assistant",
        "model": generation.request.model,
        "content": content,
        "stop_reason": _stop_reason(generation),
        "stop_sequence": None,
    }


def _stop_reason(generation: Generation) -> str:
    return "max_tokens" if generation.truncated else "end_turn"


def _usage(generation: Generation, *, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": generation.request.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }
