"""The OpenAI chat completions dialect: ``POST /v1/chat/completions`` (SSE ``data:`` chunks
ended by ``data: [DONE]``, or one ``chat.completion`` object) and ``GET /v1/models``."""

from __future__ import annotations

from typing import Any

from .dialect import (
    ChatRequest,
    Dialect,
    Generation,
    bearer_token,
    default_message,
    request_object,
    sse,
    turns_of,
)
from .limits import WindowState

MODELS = ("sim-gpt", "sim-gpt-mini", "sim-text-embedding")
_CREATED = 1_700_000_000
_FINGERPRINT = "fp_simulator"


class OpenAIDialect(Dialect):
    name = "openai"
    base_path = "/v1"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"
    id_prefix = "chatcmpl-sim"

    def given_key(self, headers: Any) -> str | None:
        return bearer_token(headers)

    def unauthorized(self, given: str | None) -> dict[str, Any]:
        if given is None:
            return _error(
                "You didn't provide an API key. You need to provide your API key in "
                "an Authorization header using Bearer auth (i.e. Authorization: "
                "Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        masked = f"{given[:3]}****{given[-4:]}" if len(given) > 10 else "****"
        return _error(
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            code="invalid_api_key",
        )

    def error(self, status: int, message: str) -> dict[str, Any]:
        if status == 429:
            return _error(message, "requests", code="rate_limit_exceeded")
        return _error(message, "server_error" if status >= 500 else "invalid_request_error")

    def parse(self, body: Any) -> ChatRequest:
        body = request_object(body)
        stream = bool(body.get("stream"))
        return ChatRequest.build(
            body.get("model"),
            turns_of(body.get("messages")),
            stream=stream,
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            include_usage=stream and bool((body.get("stream_options") or {}).get("include_usage")),
        )

    def start(self, generation: Generation) -> bytes:
        return sse(_chunk(generation, {"role": "assistant", "content": "", "refusal": None}))

    def delta(self, generation: Generation, text: str) -> bytes:
        return sse(_chunk(generation, {"content": text}))

    def end(self, generation: Generation) -> bytes:
        frames = sse(_chunk(generation, {}, _finish_reason(generation)))
        if generation.request.include_usage:
            frames += sse({**_chunk(generation, {}), "choices": [], "usage": _usage(generation)})
        return frames + sse("[DONE]")

    def stream_error(self, generation: Generation, message: str | None) -> bytes:
        return sse(_error(message or default_message(500), "server_error"))

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-sim", "choices": [\n\n'

    def complete(self, generation: Generation) -> dict[str, Any]:
        return {
            "id": generation.id,
            "object": "chat.completion",
            "created": generation.created,
            "model": generation.request.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": _finish_reason(generation),
                }
            ],
            "usage": _usage(generation),
        }

    def rate_limit_headers(self, window: WindowState) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(window.limit),
            "x-ratelimit-remaining-requests": str(window.remaining),
            "x-ratelimit-reset-requests": go_duration(window.reset_seconds),
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": _CREATED, "owned_by": "llmjobs"}
                for model in MODELS
            ],
        }


def _error(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _chunk(
    generation: Generation,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    chunk = {
        "id": generation.id,
        "object": "chat.completion.chunk",
        "created": generation.created,
        "model": generation.request.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if generation.request.include_usage:
        chunk["usage"] = None
    return chunk


def _finish_reason(generation: Generation) -> str:
    return "length" if generation.truncated else "stop"


def _usage(generation: Generation) -> dict[str, int]:
    prompt, completion = generation.request.prompt_tokens, generation.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def go_duration(seconds: float) -> str:
    """``seconds`` as OpenAI writes its resets (Go's Duration format): "120ms", "1s",
    "17.28s", "6m0s", "1h2m3s"; rounded to the millisecond."""
    milliseconds = max(0, round(seconds * 1000))
    if milliseconds == 0:
        return "0s"
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    minutes, milliseconds = divmod(milliseconds, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{milliseconds / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
