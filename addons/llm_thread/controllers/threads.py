"""Threads and their messages, as their user sees them (managers see every thread).

::

    GET    /api/threads                  the user's threads, newest activity first
    POST   /api/threads                  {"provider_id", "model_id"?, "name"?, "system_prompt"?}
    GET    /api/threads/{id}             one thread
    PATCH  /api/threads/{id}             {"name"?, "model_id"?, "system_prompt"?}
    DELETE /api/threads/{id}
    GET    /api/threads/{id}/messages    its messages in order
    POST   /api/threads/{id}/messages    {"body"}: a user message, without a reply
    GET    /api/models                   the chat models one may use

Generating a reply is ``POST /api/threads/{id}/generate`` (llm_generation_job).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from core.exceptions import ValidationError
from core.http import CurrentUser, visible_record

from .. import updates

router = APIRouter(prefix="/api", tags=["threads"])


class ThreadIn(BaseModel):
    provider_id: int
    model_id: int | None = None
    name: str = Field("New chat", min_length=1, max_length=256)
    system_prompt: str | None = Field(None, max_length=100_000)


class ThreadPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=256)
    model_id: int | None = None
    system_prompt: str | None = Field(None, max_length=100_000)


class ThreadOut(BaseModel):
    id: int
    name: str
    user_id: int | None
    provider_id: int
    model_id: int | None
    system_prompt: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class MessageIn(BaseModel):
    body: str = Field(min_length=1, max_length=1_000_000)


class MessageOut(BaseModel):
    id: int
    thread_id: int
    llm_role: str
    body: str
    state: str
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    created_at: dt.datetime


class ModelOut(BaseModel):
    id: int
    name: str
    provider_id: int
    provider_name: str
    default: bool


def thread_out(thread) -> ThreadOut:
    return ThreadOut(
        id=thread.id,
        name=thread.name,
        user_id=thread.user_id.id or None,
        provider_id=thread.provider_id.id,
        model_id=thread.model_id.id or None,
        system_prompt=thread.system_prompt or None,
        created_at=thread.create_date,
        updated_at=thread.write_date,
    )


def message_out(message) -> MessageOut:
    return MessageOut(**updates.message_payload(message), created_at=message.create_date)


@router.get("/threads")
def list_threads(
    user: CurrentUser,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[ThreadOut]:
    with user.environment(readonly=True) as env:
        threads = env["llm.thread"].search([], limit=limit, offset=offset)
        return [thread_out(thread) for thread in threads]


@router.post("/threads", status_code=201)
def create_thread(body: ThreadIn, user: CurrentUser) -> ThreadOut:
    with user.environment() as env:
        if not env["llm.provider"].sudo().browse(body.provider_id).exists():
            raise ValidationError(f"provider_id: there is no provider {body.provider_id}.")
        values: dict[str, Any] = body.model_dump(exclude_none=True)
        return thread_out(env["llm.thread"].create(values))


@router.get("/threads/{thread_id}")
def read_thread(thread_id: int, user: CurrentUser) -> ThreadOut:
    with user.environment(readonly=True) as env:
        return thread_out(visible_record(env, "llm.thread", thread_id, "Thread"))


@router.patch("/threads/{thread_id}")
def update_thread(thread_id: int, body: ThreadPatch, user: CurrentUser) -> ThreadOut:
    with user.environment() as env:
        thread = visible_record(env, "llm.thread", thread_id, "Thread")
        values = body.model_dump(exclude_unset=True)
        if values:
            thread.write(values)
        return thread_out(thread)


@router.delete("/threads/{thread_id}", status_code=204)
def delete_thread(thread_id: int, user: CurrentUser) -> None:
    with user.environment() as env:
        visible_record(env, "llm.thread", thread_id, "Thread").unlink()


@router.get("/threads/{thread_id}/messages")
def list_messages(thread_id: int, user: CurrentUser) -> list[MessageOut]:
    with user.environment(readonly=True) as env:
        thread = visible_record(env, "llm.thread", thread_id, "Thread")
        messages = env["llm.message"].search([("thread_id", "=", thread.id)], order="id")
        return [message_out(message) for message in messages]


@router.post("/threads/{thread_id}/messages", status_code=201)
def post_message(thread_id: int, body: MessageIn, user: CurrentUser) -> MessageOut:
    with user.environment() as env:
        thread = visible_record(env, "llm.thread", thread_id, "Thread")
        return message_out(thread.message_post(body=body.body, llm_role="user"))


@router.get("/models", tags=["providers"])
def list_models(user: CurrentUser) -> list[ModelOut]:
    with user.environment(readonly=True) as env:
        models = env["llm.model"].search([("model_use", "=", "chat")])
        return [
            ModelOut(
                id=model.id,
                name=model.name,
                provider_id=model.provider_id.id,
                provider_name=model.provider_id.sudo().name,
                default=bool(model.default),
            )
            for model in models
        ]
