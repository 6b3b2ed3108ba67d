"""The update dicts a generation yields — the same in direct and in queued mode.

::

    {'type': 'message_create', 'message': MESSAGE}          a message appeared (the user's,
                                                             then the assistant's reply)
    {'type': 'message_chunk', 'message': MESSAGE, 'content': 'more text'}
                                                             text appended to the reply
    {'type': 'message_update', 'message': MESSAGE}          the reply's final state
    {'type': 'done', 'message': MESSAGE, ...}               the generation finished
    {'type': 'error', 'error': 'what went wrong', ...}       it failed (the reply, if any,
                                                             keeps its partial text, marked)

Queued mode adds ``{'type': 'job_status', 'job_id', 'state', 'position', 'message'}`` before
the reply, a ``seq`` to each ``message_chunk`` (its place in the job's stream log, to resume
after), ``{'type': 'restart', 'message', 'job_id', 'attempt', 'seq'}`` when a new attempt
starts the reply over, and ends a cancelled job with ``{'type': 'cancelled', 'job_id',
'message'}``.
MESSAGE is ``message_payload(message)``: plain data, safe to send as JSON.
"""

from __future__ import annotations

from typing import Any


def message_payload(message) -> dict[str, Any]:
    return {
        "id": message.id,
        "thread_id": message.thread_id.id,
        "llm_role": message.llm_role,
        "body": message.body or "",
        "state": message.state,
        "error": message.error or None,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "finish_reason": message.finish_reason or None,
    }


def message_create(payload: dict) -> dict[str, Any]:
    return {"type": "message_create", "message": payload}


def message_chunk(payload: dict, content: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message_chunk", "message": payload, "content": content, **extra}


def restart(payload: dict | None, **extra: Any) -> dict[str, Any]:
    return {"type": "restart", "message": payload, **extra}


def message_update(payload: dict) -> dict[str, Any]:
    return {"type": "message_update", "message": payload}


def done(payload: dict | None, **extra: Any) -> dict[str, Any]:
    return {"type": "done", "message": payload, **extra}


def error(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": text, **extra}
