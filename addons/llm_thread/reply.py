"""An assistant reply while its stream goes: the text so far, usage, finish, and how it
ended; then the values its ``llm.message`` keeps and the updates that announce them.

``llm.thread._stream_assistant_reply`` fills one; whoever created the reply message writes
``message_values()`` when the stream is over (direct generation: ``generate_response``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import updates
from .wire.events import Finish, Usage


@dataclass
class ReplyProgress:
    """``payload`` is the message's update payload as created (``message_chunk`` updates
    carry it). ``state`` goes from "streaming" to "done", "error" or "cancelled"."""

    message_id: int
    payload: dict[str, Any]
    parts: list[str] = field(default_factory=list)
    usage: Usage | None = None
    finish: Finish | None = None
    state: str = "streaming"
    error: str | None = None
    error_kind: str | None = None  # "retryable" or "permanent", as ProviderError.kind

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def complete(self) -> None:
        self.state = "done"

    def fail(self, error: str, kind: str) -> None:
        self.state, self.error, self.error_kind = "error", error, kind

    def cancel(self, reason: str) -> None:
        self.state, self.error = "cancelled", reason

    def message_values(self) -> dict[str, Any]:
        """The reply message's final values: the text in every case (a partial reply is
        kept, marked with its error), usage and finish reason when it completed."""
        values: dict[str, Any] = {"body": self.text, "state": self.state}
        if self.state != "done":
            values["error"] = self.error or f"The reply ended {self.state}."
            return values
        if self.usage is not None:
            values["prompt_tokens"] = self.usage.prompt_tokens or 0
            values["completion_tokens"] = self.usage.completion_tokens or 0
        if self.finish is not None:
            values["finish_reason"] = self.finish.reason or False
            values["provider_metadata"] = self.finish.metadata or False
        return values

    def final_updates(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """``message_update`` with the final payload, then ``done`` or ``error``."""
        if self.state == "done":
            return [updates.message_update(payload), updates.done(payload)]
        return [
            updates.message_update(payload),
            updates.error(self.error or "", kind=self.error_kind or "permanent", message=payload),
        ]
