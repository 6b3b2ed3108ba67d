"""What a provider stream yields, whatever its wire protocol.

A successful stream yields any number of ``TextDelta``, then ``Usage`` (when the provider
reported token counts) and ``Finish`` last. A failed stream raises ``ProviderError`` instead
of yielding ``Finish``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text, to append to what came before."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of the whole exchange, as the provider reported them."""

    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class Finish:
    """The stream completed. ``reason`` is the provider's own word ("stop", "end_turn",
    "length", "max_tokens"...); ``metadata`` holds the provider's response id, model, etc."""

    reason: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


StreamEvent = TextDelta | Usage | Finish
