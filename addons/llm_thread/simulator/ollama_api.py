"""The Ollama dialect: ``POST /api/chat`` (NDJSON lines, streamed unless ``"stream":
false``, the last with ``done: true``) and ``GET /api/tags``."""

from __future__ import annotations

import time
from typing import Any

from .dialect import (
    ChatRequest,
    Dialect,
    Generation,
    bearer_token,
    ndjson,
    request_object,
    turns_of,
)

MODELS = ("sim-llama:latest", "sim-embed-text:latest")
_MODIFIED_AT = "2025-01-01T00:00:00Z"


class OllamaDialect(Dialect):
    name = "ollama"
    base_path = ""
    chat_path = "/api/chat"
    models_path = "/api/tags"
    id_prefix = ""
    stream_media_type = "application/x-ndjson"

    def given_key(self, headers: Any) -> str | None:
        return bearer_token(headers)

    def unauthorized(self, given: str | None) -> dict[str, Any]:
        return {"error": "unauthorized"}

    def error(self, status: int, message: str) -> dict[str, Any]:
        return {"error": message}

    def parse(self, body: Any) -> ChatRequest:
        body = request_object(body)
        num_predict = (body.get("options") or {}).get("num_predict")
        # num_predict -1 (or any value below 1) means "no limit" in Ollama.
        limit = num_predict if isinstance(num_predict, int) and num_predict > 0 else None
        return ChatRequest.build(
            body.get("model"),
            turns_of(body.get("messages")),
            stream=body.get("stream", True) is not False,
            max_tokens=limit,
        )

    def start(self, generation: Generation) -> bytes:
        return b""

    def delta(self, generation: Generation, text: str) -> bytes:
        return ndjson(
            {**_head(generation), "message": {"role": "assistant", "content": text}, "done": False}
        )

    def end(self, generation: Generation) -> bytes:
        return ndjson(_final(generation, ""))

    def stream_error(self, generation: Generation, message: str | None) -> bytes:
        return ndjson({"error": message or "an error was encountered while running the model"})

    def malformed(self) -> bytes:
        return b'{"model": "sim", "message": {"content"\n'

    def complete(self, generation: Generation) -> dict[str, Any]:
        return _final(generation, generation.text)

    def models(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": model,
                    "model": model,
                    "modified_at": _MODIFIED_AT,
                    "size": 4_661_224_676,
                    "digest": f"{index:064x}",
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "parameter_size": "8B",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for index, model in enumerate(MODELS, start=1)
            ]
        }


def _head(generation: Generation) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"model": generation.request.model, "created_at": now}


def _final(generation: Generation, content: str) -> dict[str, Any]:
    nanoseconds = int(generation.duration * 1e9)
    return {
        **_head(generation),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "length" if generation.truncated else "stop",
        "total_duration": nanoseconds,
        "load_duration": 0,
        "prompt_eval_count": generation.request.prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": generation.completion_tokens,
        "eval_duration": nanoseconds,
    }
