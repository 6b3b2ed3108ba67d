"""What one simulated request does: the reply's length and pacing, and the fault to inject.

A request's Scenario is the server's defaults, updated by the next fault queued with
``SimulatorServer.push_fault(...)``, then by directives in the last user message, written
``[sim:key=value key=value]`` with the field names below, e.g. ``[sim:status=429
retry_after=2]``, ``[sim:cut_after=5]``, ``[sim:tokens=50 token_delay=0.01]``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_DIRECTIVES = re.compile(r"\[sim:([^\]]*)\]")


@dataclass(frozen=True)
class Scenario:
    """The fields marked "stream" apply to streamed replies only; a fault at index N comes
    after N chunks (N may equal ``tokens``: after the last chunk, before the end frames)."""

    tokens: int = 20
    token_delay: float = 0.0  # seconds before each chunk but the first
    first_token_delay: float = 0.0  # seconds before the first chunk
    status: int | None = None  # answer with this HTTP error instead of a reply
    retry_after: float | None = None  # the Retry-After header sent with ``status``
    message: str | None = None  # the error message of ``status`` or ``stream_error_after``
    cut_after: int | None = None  # stream: close the connection abruptly after N chunks
    stream_error_after: int | None = None  # stream: the protocol's error event after N chunks
    malformed_after: int | None = None  # stream: a chunk that is not JSON after N chunks
    end_after: int | None = None  # stream: end cleanly after N chunks, without the end frames

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"Simulator setting '{field.name}' cannot be negative.")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"Simulator status {self.status} is not an HTTP error status.")

    def updated(self, **settings: Any) -> Scenario:
        """This scenario with ``settings`` (strings are converted to the fields' types)."""
        unknown = sorted(set(settings) - set(_PARSERS))
        if unknown:
            raise ValueError(
                f"Unknown simulator setting(s): {', '.join(unknown)} "
                f"(known: {', '.join(_PARSERS)})."
            )
        try:
            values = {
                name: None if value is None else _PARSERS[name](value)
                for name, value in settings.items()
            }
        except ValueError as error:
            raise ValueError(f"Invalid simulator setting: {error}") from None
        return dataclasses.replace(self, **values)

    def with_directives(self, text: str) -> Scenario:
        return self.updated(**parse_directives(text))

    def stream_fault_at(self, index: int) -> str | None:
        """The fault to inject after ``index`` chunks: "cut", "error", "malformed", "end" or
        None."""
        faults = (
            ("cut", self.cut_after),
            ("error", self.stream_error_after),
            ("malformed", self.malformed_after),
            ("end", self.end_after),
        )
        return next((name for name, after in faults if after == index), None)


def parse_directives(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of every ``[sim:...]`` directive in ``text``."""
    settings: dict[str, str] = {}
    for directive in _DIRECTIVES.findall(text):
        for pair in directive.replace(",", " ").split():
            name, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"Simulator directive '{pair}' is not key=value.")
            settings[name] = value
    return settings


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "tokens": int,
    "token_delay": float,
    "first_token_delay": float,
    "status": int,
    "retry_after": float,
    "message": str,
    "cut_after": int,
    "stream_error_after": int,
    "malformed_after": int,
    "end_after": int,
}
