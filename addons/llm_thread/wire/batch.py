"""Provider batch jobs, whatever the provider: requests sent together, run by the provider
within its window (24 hours, at half the price), polled, and their results read back.

Each protocol module (``openai_batch``, ``anthropic_batch``) has the same functions:

- ``MAX_REQUESTS`` and ``MAX_BYTES``: the provider's limits for one batch;
- ``request_line(request) -> bytes``: a request as the submission carries it, so that a caller
  splits its requests under ``MAX_BYTES`` before it submits them;
- ``submit(client, *, provider, api_base, api_key, lines, metadata) -> BatchState``;
- ``retrieve(...)`` and ``cancel(...)`` by ``batch_id`` -> ``BatchState``;
- ``results(client, ..., state) -> Iterator[BatchResult]``, once ``state.ended``.

Results come in any order: each carries the ``custom_id`` it was submitted with. A request
the provider never ran (the batch expired or was cancelled first) is reported as ``expired``
or ``canceled``. Every failure of a call raises ``errors.ProviderError``, classified as the
streamed calls' are; a request that failed inside the batch is an ``errored`` result whose
``error`` is classified the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import errors, transport
from .events import Finish, Usage

SUCCEEDED, ERRORED, EXPIRED, CANCELED = "succeeded", "errored", "expired", "canceled"


@dataclass(frozen=True)
class BatchRequest:
    """One reply asked for in a batch; ``custom_id`` finds its result again."""

    custom_id: str
    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchState:
    """A batch as the provider describes it: ``status`` in the provider's own word,
    ``ended`` once no result will change any more, ``counts`` the provider's request counts
    as given, ``error`` why the whole batch failed (its validation), and ``data`` what a
    manager may read (file ids, times; nothing secret)."""

    id: str
    status: str
    ended: bool
    counts: dict[str, int]
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    """The result of one request: ``outcome`` is succeeded (``text``, ``usage``,
    ``finish``), errored (``error``), expired or canceled."""

    custom_id: str
    outcome: str
    text: str = ""
    usage: Usage | None = None
    finish: Finish | None = None
    error: errors.ProviderError | None = None


def jsonl(text: str, *, provider: str, api_key: str | None) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL document (blank lines skipped)."""
    return [
        transport.decode_object(line, provider=provider, api_key=api_key)
        for line in text.splitlines()
        if line.strip()
    ]


def line(data: dict[str, Any]) -> bytes:
    """One compact JSON line."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def request_error(
    provider: str,
    message: str | None,
    *,
    api_key: str | None,
    status: int | None = None,
    error_type: str | None = None,
) -> errors.ProviderError:
    """The error of one request inside a batch: retryable as an HTTP status is, or as an
    error type is when the provider gives no status."""
    if status is not None:
        retryable = errors.is_retryable_status(status)
    else:
        retryable = error_type not in errors.PERMANENT_ERROR_TYPES
    text = message or "(no error message)"
    if error_type:
        text = f"{error_type}: {text}"
    return errors.ProviderError(provider, text, retryable=retryable, status=status, api_key=api_key)


def counts(value: Any) -> dict[str, int]:
    """A request-counts object, its counts only."""
    if not isinstance(value, dict):
        return {}
    return {key: count for key, count in value.items() if transport.count(count) is not None}
