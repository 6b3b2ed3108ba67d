"""What a provider stream yields, whatever its wire protocol.

A successful stream yields any number of ``TextDelta``, then ``Usage`` (when the provider
reported token counts) and ``Finish`` last. A stream the provider runs as a background
response (OpenAI's Responses API) first yields ``Resumable``, and its deltas carry cursors: a
reader that lost the stream can re-attach after the last cursor it saw. A failed stream
raises ``ProviderError`` instead of yielding ``Finish``. When the provider's response headers
report its requests limit, ``RateLimit`` comes before everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text, to append to what came before. ``cursor``: the
    provider's sequence number of the event that carried it, after which the stream can be
    resumed (None when the protocol cannot resume)."""

    text: str
    cursor: int | None = None


@dataclass(frozen=True, slots=True)
class Resumable:
    """The provider runs this reply as a background response, ``response_id``, that goes on
    without the connection: a reader can re-attach to it after ``cursor``. Yielded once,
    before any text."""

    response_id: str
    cursor: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of the whole exchange, as the provider reported them; ``cached_tokens``:
    the part of the prompt read from the provider's cache (billed less), when it says."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The stream completed. ``reason`` is the provider's own word ("stop", "end_turn",
    "length", "max_tokens"...); ``metadata`` holds the provider's response id, model, etc."""

    reason: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The provider's requests limit when it accepted this stream, from its response headers
    (OpenAI's ``x-ratelimit-*-requests``, Anthropic's ``anthropic-ratelimit-requests-*``):
    what clients sharing the limit pace themselves by. ``reset_seconds``: until the limit is
    fully replenished. A value the provider did not send, or sent unreadable, is None."""

    limit_requests: int | None
    remaining_requests: int | None
    reset_seconds: float | None


StreamEvent = RateLimit | Resumable | TextDelta | Usage | Finish
