"""Anthropic Message Batches: the requests inline (``POST {api_base}/messages/batches``),
polled (``GET {api_base}/messages/batches/{id}``), cancelled (``POST …/cancel``), their results
read as JSONL from ``GET {api_base}/messages/batches/{id}/results`` once the batch has ended.
See ``batch`` for the interface.

``processing_status``: in_progress, canceling, ended. The counts other than ``processing``
stay 0 until the whole batch ends; then succeeded, errored, canceled and expired sum to the
total. A batch has no metadata: a submitter cannot find one again by a key of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from . import anthropic, transport
from .batch import (
    CANCELED,
    ERRORED,
    EXPIRED,
    SUCCEEDED,
    BatchRequest,
    BatchResult,
    BatchState,
    counts,
    jsonl,
    line,
    request_error,
)
from .events import Finish, Usage

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
_DATA = ("created_at", "expires_at", "ended_at", "cancel_initiated_at", "archived_at")
_OUTCOMES = {"succeeded": SUCCEEDED, "errored": ERRORED, "expired": EXPIRED, "canceled": CANCELED}


def request_line(request: BatchRequest) -> bytes:
    """The request as an element of ``requests``: the params a streamed request would send,
    not streamed."""
    params = anthropic.chat_request(
        api_base="",
        api_key=None,
        model=request.model,
        messages=request.messages,
        options=request.options,
    ).body
    params.pop("stream", None)
    return line({"custom_id": request.custom_id, "params": params})


def submit(
    client: httpx.Client,
    *,
    provider: str,
    api_base: str,
    api_key: str | None,
    lines: Sequence[bytes],
    metadata: dict[str, str] | None = None,
) -> BatchState:
    """Create the batch (``metadata`` has nowhere to go in this protocol)."""
    body = b'{"requests":[' + b",".join(item.rstrip(b"\n") for item in lines) + b"]}"
    batch = transport.call_object(
        client,
        "POST",
        transport.endpoint(api_base, "/messages/batches"),
        provider=provider,
        api_key=api_key,
        headers={**_headers(api_key), "content-type": "application/json"},
        content=body,
    )
    return _state(batch)


def retrieve(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, batch_id: str
) -> BatchState:
    url = transport.endpoint(api_base, f"/messages/batches/{batch_id}")
    return _state(
        transport.call_object(
            client, "GET", url, provider=provider, api_key=api_key, headers=_headers(api_key)
        )
    )


def cancel(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, batch_id: str
) -> BatchState:
    url = transport.endpoint(api_base, f"/messages/batches/{batch_id}/cancel")
    return _state(
        transport.call_object(
            client, "POST", url, provider=provider, api_key=api_key, headers=_headers(api_key)
        )
    )


def results(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, state: BatchState
) -> Iterator[BatchResult]:
    url = transport.endpoint(api_base, f"/messages/batches/{state.id}/results")
    headers = {**_headers(api_key), "accept": "application/binary"}
    text = transport.call(
        client, "GET", url, provider=provider, api_key=api_key, headers=headers
    ).text
    for data in jsonl(text, provider=provider, api_key=api_key):
        yield _result(data, provider, api_key)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"anthropic-version": anthropic.ANTHROPIC_VERSION}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _state(batch: dict[str, Any]) -> BatchState:
    status = str(batch.get("processing_status") or "")
    return BatchState(
        id=str(batch.get("id") or ""),
        status=status,
        ended=status == "ended",
        counts=counts(batch.get("request_counts")),
        data=transport.metadata(batch, _DATA),
    )


def _result(data: dict[str, Any], provider: str, api_key: str | None) -> BatchResult:
    custom_id = str(data.get("custom_id") or "")
    result = data.get("result") if isinstance(data.get("result"), dict) else {}
    outcome = _OUTCOMES.get(result.get("type"), ERRORED)
    if outcome in (EXPIRED, CANCELED):
        return BatchResult(custom_id, outcome)
    if outcome == ERRORED:
        payload = result.get("error") if isinstance(result.get("error"), dict) else {}
        detail = payload.get("error") if isinstance(payload.get("error"), dict) else payload
        return BatchResult(
            custom_id,
            ERRORED,
            error=request_error(
                provider, detail.get("message"), api_key=api_key, error_type=detail.get("type")
            ),
        )
    message = result.get("message") if isinstance(result.get("message"), dict) else {}
    text = "".join(
        block.get("text") or ""
        for block in message.get("content") or ()
        if isinstance(block, dict) and block.get("type") == "text"
    )
    usage = message.get("usage") or {}
    return BatchResult(
        custom_id,
        SUCCEEDED,
        text=transport.clean_text(text),
        usage=Usage(
            transport.count(usage.get("input_tokens")), transport.count(usage.get("output_tokens"))
        ),
        finish=Finish(message.get("stop_reason"), transport.metadata(message, ("id", "model"))),
    )
