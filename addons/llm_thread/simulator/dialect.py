"""What differs between the simulated protocols, behind one interface: where the endpoints
are, how a request reads, and the bytes and JSON of replies and errors. The HTTP side
(auth, faults, pacing, stats) is the same for all and lives in ``app``."""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from .limits import WindowState
from .replies import count_tokens, reply_chunks
from .scenario import Scenario

_DEFAULT_MESSAGES = {
    400: "Invalid request",
    401: "Invalid API key",
    404: "Not found",
    429: "Rate limit exceeded",
    500: "The server had an error while processing your request",
    503: "The service is temporarily unavailable",
    529: "Overloaded",
}


class InvalidRequest(ValueError):
    """The request body does not follow the protocol; answered with a 400."""


@dataclass(frozen=True)
class ChatRequest:
    """What the simulator needs from a chat request, whatever its protocol."""

    model: str
    prompt: str  # the last user message's text, of which the reply is a function
    prompt_tokens: int
    stream: bool
    max_tokens: int | None = None
    include_usage: bool = False  # OpenAI's stream_options.include_usage

    @classmethod
    def build(
        cls,
        model: Any,
        turns: list[tuple[str, str]],
        *,
        stream: bool,
        max_tokens: Any = None,
        include_usage: bool = False,
    ) -> ChatRequest:
        """From ``(role, text)`` turns, system text included."""
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model: a model name is required.")
        if not turns:
            raise InvalidRequest("messages: at least one message is required.")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidRequest("max_tokens: must be a positive integer.")
        prompt = next((text for role, text in reversed(turns) if role == "user"), "")
        return cls(
            model,
            prompt,
            sum(count_tokens(text) for _, text in turns),
            stream,
            max_tokens,
            include_usage,
        )


@dataclass(frozen=True)
class Generation:
    """One reply being produced: its request, scenario and chunks."""

    id: str
    created: int
    request: ChatRequest
    scenario: Scenario
    chunks: tuple[str, ...]
    truncated: bool  # cut short by the request's max_tokens

    @classmethod
    def plan(cls, request: ChatRequest, scenario: Scenario, id_prefix: str) -> Generation:
        chunks = reply_chunks(request.prompt, scenario.tokens)
        limit = request.max_tokens or len(chunks)
        return cls(
            f"{id_prefix}{uuid.uuid4().hex[:24]}",
            int(time.time()),
            request,
            scenario,
            tuple(chunks[:limit]),
            len(chunks) > limit,
        )

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def completion_tokens(self) -> int:
        return len(self.chunks)

    @property
    def duration(self) -> float:
        """Seconds the whole reply takes to produce."""
        if not self.chunks:
            return 0.0
        return self.scenario.first_token_delay + self.scenario.token_delay * (len(self.chunks) - 1)

    def delay_before(self, index: int) -> float:
        return self.scenario.first_token_delay if index == 0 else self.scenario.token_delay


class Dialect(ABC):
    """One protocol's endpoints and formats. Stream frames are bytes ready to send."""

    name: str
    base_path: str  # what the server's URL ends with, e.g. "/v1"
    chat_path: str
    models_path: str
    id_prefix: str
    stream_media_type = "text/event-stream"

    @abstractmethod
    def given_key(self, headers: Any) -> str | None:
        """The API key the request carries (``headers`` is a Starlette Headers)."""

    @abstractmethod
    def unauthorized(self, given: str | None) -> dict[str, Any]:
        """The 401 body for a missing or wrong key."""

    @abstractmethod
    def error(self, status: int, message: str) -> dict[str, Any]:
        """An error body."""

    @abstractmethod
    def parse(self, body: Any) -> ChatRequest:
        """Read a chat request; raise InvalidRequest."""

    @abstractmethod
    def start(self, generation: Generation) -> bytes:
        """Frames before the first chunk."""

    @abstractmethod
    def delta(self, generation: Generation, text: str) -> bytes:
        """The frame of one chunk."""

    @abstractmethod
    def end(self, generation: Generation) -> bytes:
        """Frames after the last chunk, the terminal marker included."""

    @abstractmethod
    def stream_error(self, generation: Generation, message: str | None) -> bytes:
        """The in-stream error frame (with the protocol's usual message when None)."""

    @abstractmethod
    def malformed(self) -> bytes:
        """A frame whose payload is not JSON."""

    @abstractmethod
    def complete(self, generation: Generation) -> dict[str, Any]:
        """The non-streamed reply."""

    @abstractmethod
    def models(self) -> dict[str, Any]:
        """The model list's body."""

    def rate_limit_headers(self, window: WindowState) -> dict[str, str]:
        """The provider's own headers for the state of its requests limit, sent with every
        generation answer while the server has an rpm limit (none by default: Ollama has
        no rate limits)."""
        return {}


def default_message(status: int) -> str:
    if status in _DEFAULT_MESSAGES:
        return _DEFAULT_MESSAGES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP error {status}"


def bearer_token(headers: Any) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def turns_of(messages: Any) -> list[tuple[str, str]]:
    if not isinstance(messages, list):
        raise InvalidRequest("messages: must be an array.")
    if not all(
        isinstance(message, dict) and isinstance(message.get("role"), str) for message in messages
    ):
        raise InvalidRequest("messages: every message must be an object with a role.")
    return [(message["role"], text_of(message.get("content"))) for message in messages]


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def ndjson(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def request_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body
