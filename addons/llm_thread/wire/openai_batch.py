"""OpenAI Batch: the requests as a JSONL file (``POST {api_base}/files``, purpose ``batch``),
one batch over it (``POST {api_base}/batches``, window ``24h``), polled (``GET
{api_base}/batches/{id}``), cancelled (``POST …/cancel``), its results read from the output
and error files (``GET {api_base}/files/{id}/content``). See ``batch`` for the interface.

Status: validating -> in_progress -> finalizing -> completed; failed (the input did not
validate), expired (the window passed: what finished is in the output file), cancelling ->
cancelled. Counts (total, completed, failed) move while the batch runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from . import openai, transport
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

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_DATA = (
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)


def request_line(request: BatchRequest) -> bytes:
    """The request's line of the input file: the body a streamed request would send, not
    streamed."""
    body = openai.chat_request(
        api_base="",
        api_key=None,
        model=request.model,
        messages=request.messages,
        options=request.options,
    ).body
    body.pop("stream", None)
    body.pop("stream_options", None)
    return line({"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT, "body": body})


def submit(
    client: httpx.Client,
    *,
    provider: str,
    api_base: str,
    api_key: str | None,
    lines: Sequence[bytes],
    metadata: dict[str, str] | None = None,
) -> BatchState:
    """Upload the input file and create the batch over it."""
    auth = _auth(api_key)
    upload = transport.call_object(
        client,
        "POST",
        transport.endpoint(api_base, "/files"),
        provider=provider,
        api_key=api_key,
        headers=auth,
        data={"purpose": "batch"},
        files={"file": ("batch.jsonl", b"".join(lines), "application/jsonl")},
    )
    batch = transport.call_object(
        client,
        "POST",
        transport.endpoint(api_base, "/batches"),
        provider=provider,
        api_key=api_key,
        headers=auth,
        json={
            "input_file_id": upload.get("id"),
            "endpoint": ENDPOINT,
            "completion_window": WINDOW,
            "metadata": metadata or None,
        },
    )
    return _state(batch)


def retrieve(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, batch_id: str
) -> BatchState:
    url = transport.endpoint(api_base, f"/batches/{batch_id}")
    return _state(
        transport.call_object(
            client, "GET", url, provider=provider, api_key=api_key, headers=_auth(api_key)
        )
    )


def cancel(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, batch_id: str
) -> BatchState:
    url = transport.endpoint(api_base, f"/batches/{batch_id}/cancel")
    return _state(
        transport.call_object(
            client, "POST", url, provider=provider, api_key=api_key, headers=_auth(api_key)
        )
    )


def find(
    client: httpx.Client,
    *,
    provider: str,
    api_base: str,
    api_key: str | None,
    metadata: dict[str, str],
    pages: int = 5,
) -> BatchState | None:
    """The newest batch created with all of ``metadata``, among the last ``pages`` pages of
    100: how a submitter that died between creating a batch and recording it finds it
    again, rather than paying for it twice."""
    params: dict[str, Any] = {"limit": 100}
    for _ in range(pages):
        page = transport.call_object(
            client,
            "GET",
            transport.endpoint(api_base, "/batches"),
            provider=provider,
            api_key=api_key,
            headers=_auth(api_key),
            params=params,
        )
        for batch in page.get("data") or ():
            found = batch.get("metadata") if isinstance(batch, dict) else None
            if isinstance(found, dict) and metadata.items() <= found.items():
                return _state(batch)
        if not (page.get("has_more") and page.get("last_id")):
            return None
        params["after"] = page["last_id"]
    return None


def results(
    client: httpx.Client, *, provider: str, api_base: str, api_key: str | None, state: BatchState
) -> Iterator[BatchResult]:
    """The output file's results, then the error file's."""
    for key in ("output_file_id", "error_file_id"):
        file_id = state.data.get(key)
        if not file_id:
            continue
        url = transport.endpoint(api_base, f"/files/{file_id}/content")
        text = transport.call(
            client, "GET", url, provider=provider, api_key=api_key, headers=_auth(api_key)
        ).text
        for data in jsonl(text, provider=provider, api_key=api_key):
            yield _result(data, provider, api_key)


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _state(batch: dict[str, Any]) -> BatchState:
    status = str(batch.get("status") or "")
    problems = (batch.get("errors") or {}).get("data") or []
    error = "; ".join(
        f"line {problem.get('line')}: {problem.get('message')}"
        if problem.get("line") is not None
        else str(problem.get("message"))
        for problem in problems
        if isinstance(problem, dict)
    )
    return BatchState(
        id=str(batch.get("id") or ""),
        status=status,
        ended=status in ENDED,
        counts=counts(batch.get("request_counts")),
        error=error or ("The batch failed." if status == "failed" else None),
        data=transport.metadata(batch, _DATA),
    )


def _result(data: dict[str, Any], provider: str, api_key: str | None) -> BatchResult:
    custom_id = str(data.get("custom_id") or "")
    response = data.get("response") if isinstance(data.get("response"), dict) else None
    error = data.get("error") if isinstance(data.get("error"), dict) else None
    if response is None:
        code = (error or {}).get("code")
        if code == "batch_expired":
            return BatchResult(custom_id, EXPIRED)
        if code == "batch_cancelled":
            return BatchResult(custom_id, CANCELED)
        message = (error or {}).get("message")
        return BatchResult(
            custom_id,
            ERRORED,
            error=request_error(provider, message, api_key=api_key, error_type=code),
        )
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    status = response.get("status_code")
    if status != 200:
        failure = body.get("error") if isinstance(body.get("error"), dict) else {}
        return BatchResult(
            custom_id,
            ERRORED,
            error=request_error(
                provider,
                failure.get("message"),
                api_key=api_key,
                status=status if isinstance(status, int) else None,
            ),
        )
    choice = next(iter(body.get("choices") or ()), {}) or {}
    message = choice.get("message") or {}
    usage = body.get("usage") or {}
    return BatchResult(
        custom_id,
        SUCCEEDED,
        text=transport.clean_text(message.get("content") or ""),
        usage=Usage(
            transport.count(usage.get("prompt_tokens")),
            transport.count(usage.get("completion_tokens")),
        ),
        finish=Finish(choice.get("finish_reason"), transport.metadata(body, ("id", "model"))),
    )
