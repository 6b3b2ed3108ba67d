"""Reading a provider's requests limit from its response headers, in either format:

- OpenAI: ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` (integers) and
  ``x-ratelimit-reset-requests``, a Go duration ("120ms", "17.28s", "6m0s", "1h2m3s");
- Anthropic: ``anthropic-ratelimit-requests-limit``, ``-remaining`` (integers) and
  ``-reset``, the RFC 3339 moment the limit is fully replenished.

Clients that share a provider's limit pace themselves by these; a value that is absent or
unreadable is None (a provider's odd header must never fail a reply that succeeded).
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from typing import Any

import httpx

from .events import RateLimit

_OPENAI = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_ANTHROPIC = (
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
)
_INTEGER = re.compile(r"[0-9]+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|μs|ms|h|m|s)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def rate_limit(
    headers: httpx.Headers | dict[str, str], now: float | None = None
) -> RateLimit | None:
    """The requests limit the headers report (OpenAI's read first, Anthropic's for what
    they lack), or None when they report nothing readable. ``now``: epoch seconds that
    Anthropic's reset moment is counted from (default: the clock)."""
    headers = httpx.Headers(headers)
    found = RateLimit(
        _first(
            _count(headers.get(_OPENAI[0])),
            _count(headers.get(_ANTHROPIC[0])),
        ),
        _first(
            _count(headers.get(_OPENAI[1])),
            _count(headers.get(_ANTHROPIC[1])),
        ),
        _first(
            go_duration_seconds(headers.get(_OPENAI[2])),
            moment_seconds(headers.get(_ANTHROPIC[2]), now),
        ),
    )
    if found == RateLimit(None, None, None):
        return None
    return found


def go_duration_seconds(text: str | None) -> float | None:
    """Seconds of a Go duration ("1h2m3.5s", "120ms"; a bare number is seconds), else None."""
    if text is None:
        return None
    text = text.strip()
    try:
        plain = float(text)
    except ValueError:
        plain = None
    if plain is not None:
        return plain if math.isfinite(plain) and plain >= 0 else None
    total, position = 0.0, 0
    while position < len(text):
        part = _DURATION_PART.match(text, position)
        if part is None:
            return None
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        position = part.end()
    return total if text and math.isfinite(total) else None


def moment_seconds(text: str | None, now: float | None = None) -> float | None:
    """Seconds from ``now`` until an RFC 3339 moment (0 when it has passed), else None; a
    moment without a timezone is unreadable (its offset would be a guess)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _count(text: str | None) -> int | None:
    """A non-negative integer, else None."""
    if text is None or _INTEGER.fullmatch(text.strip()) is None:
        return None
    return int(text.strip())


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)
