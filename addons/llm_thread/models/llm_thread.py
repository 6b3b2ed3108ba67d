"""Conversation threads: messages, and generating the assistant's reply directly.

``generate_response(user_message=None, **options)`` is a generator of update dicts (shapes in
``addons/llm_thread/updates.py``)::

    lock the thread        an atomic conditional UPDATE, committed: works across processes;
                           the lock expires (LOCK_SECONDS, renewed while streaming) so a
                           crashed process cannot block the thread forever
    post the user message  committed; yields message_create
    create the reply       empty, state "streaming"; committed; yields message_create
    stream                 from the provider through a read-only cursor (no lock held while
                           waiting for tokens); yields message_chunk per piece of text
    complete the reply     text, usage, finish reason, state "done"; committed; yields
                           message_update and done
    unlock                 always, even when the consumer stops early

The generator commits the caller's transaction at each of these steps, so that other
processes see the conversation as it grows. A provider failure leaves the reply with its
partial text, state "error" and the error; a consumer that stops iterating closes the HTTP
stream and leaves the partial reply marked "cancelled".
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from core import UserError, fields, models

from .. import updates
from ..wire.errors import ProviderError
from ..wire.events import Finish, TextDelta, Usage

LOCK_SECONDS = 120


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LLMThread(models.Model):
    _name = "llm.thread"
    _description = "LLM conversation thread"
    _order = "write_date desc, id desc"

    name = fields.Char(required=True, default="New chat")
    user_id = fields.Many2one("res.users", required=True, ondelete="cascade", index=True,
                              default=lambda self: self.env.uid)
    provider_id = fields.Many2one("llm.provider", required=True, ondelete="restrict")
    model_id = fields.Many2one("llm.model", ondelete="set null")
    message_ids = fields.One2many("llm.message", "thread_id", string="Messages")
    active = fields.Boolean(default=True)
    system_prompt = fields.Text(help="Sent first in every conversation")
    generation_lock_token = fields.Char(copy=False)
    generation_lock_until = fields.Datetime(copy=False)

    # -- messages --------------------------------------------------------------------------
    def message_post(self, body=None, llm_role="user", author_id=None, **extra):
        """Add a message to the thread; returns it. The author defaults to the current user
        for user messages, to nobody otherwise."""
        self.ensure_one()
        if author_id is None and llm_role == "user":
            author_id = self.env.uid
        return self.env["llm.message"].create({
            "thread_id": self.id, "body": body or "", "llm_role": llm_role,
            "author_id": author_id or False, **extra,
        })

    def _conversation(self, until=None) -> list[dict[str, str]]:
        """The messages to send: the system prompt, then the finished messages in order (up
        to and including ``until`` when given)."""
        self.ensure_one()
        domain = [("thread_id", "=", self.id), ("state", "=", "done")]
        if until:
            domain.append(("id", "<=", until.id))
        messages = [{"role": "system", "content": self.system_prompt}] \
            if self.system_prompt else []
        for message in self.env["llm.message"].sudo().search(domain, order="id"):
            if message.body:
                messages.append({"role": message.llm_role, "content": message.body})
        return messages

    # -- direct generation -----------------------------------------------------------------
    def generate_response(self, user_message=None, **options) -> Iterator[dict[str, Any]]:
        """Stream the assistant's reply from the provider (see the module docstring)."""
        self.ensure_one()
        token = self._acquire_generation_lock()
        try:
            yield from self._generate_direct(user_message, options, token)
        finally:
            self._release_generation_lock(token)

    def _generate_direct(self, user_message, options, token) -> Iterator[dict[str, Any]]:
        cr = self.env.cr
        # Payloads are built before each commit: a read after it would start a transaction
        # that stays open (on SQLite: holding the write lock) while the consumer holds us.
        if user_message:
            posted = updates.message_payload(self.message_post(body=user_message,
                                                               llm_role="user"))
            cr.commit()
            yield updates.message_create(posted)
        conversation = self._conversation()
        reply = self.message_post(body="", llm_role="assistant", state="streaming")
        reply_id, provider_id, model = reply.id, self.provider_id.id, self.model_id
        model_name = model.sudo().name if model else None
        payload = updates.message_payload(reply)
        cr.commit()
        yield updates.message_create(payload)
        text: list[str] = []
        usage = finish = None
        failure: ProviderError | None = None
        finished = False
        try:
            with self.pool.environment(readonly=True) as reader:
                provider = reader["llm.provider"].browse(provider_id)
                stream = provider.chat(conversation, model=model_name, **options)
                reader.cr.commit()  # no connection is held while waiting for tokens
                try:
                    renew_at = time.monotonic() + LOCK_SECONDS / 3
                    for event in stream:
                        if isinstance(event, TextDelta):
                            text.append(event.text)
                            yield updates.message_chunk(payload, event.text)
                        elif isinstance(event, Usage):
                            usage = event
                        elif isinstance(event, Finish):
                            finish = event
                        if time.monotonic() > renew_at:
                            self._renew_generation_lock(token)
                            renew_at = time.monotonic() + LOCK_SECONDS / 3
                finally:
                    stream.close()
            finished = True
        except ProviderError as error:
            failure = error
        finally:
            reply = self.env["llm.message"].browse(reply_id)
            values: dict[str, Any] = {"body": "".join(text)}
            if failure is not None:
                values.update(state="error", error=str(failure))
            elif not finished:
                values.update(state="cancelled", error="The consumer stopped listening.")
            else:
                values.update(
                    state="done",
                    prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
                    completion_tokens=(usage.completion_tokens or 0) if usage else 0,
                    finish_reason=(finish.reason or False) if finish else False,
                    provider_metadata=(finish.metadata or False) if finish else False,
                )
            reply.write(values)
            payload = updates.message_payload(reply)
            cr.commit()
        yield updates.message_update(payload)
        if failure is not None:
            yield updates.error(str(failure), kind=failure.kind, message=payload)
        else:
            yield updates.done(payload)

    # -- the cross-process generation lock ----------------------------------------------------
    def _acquire_generation_lock(self) -> str:
        """Take the thread's generation lock (committed at once) or raise UserError."""
        table, now = self._table_obj, _now()
        token = secrets.token_hex(12)
        self.env.cr.commit()  # the lock must not wait for the caller's own writes
        taken = self.env.cr.execute(
            sa.update(table).where(
                table.c.id == self.id,
                sa.or_(table.c.generation_lock_token.is_(None),
                       table.c.generation_lock_until < now),
            ).values(generation_lock_token=token,
                     generation_lock_until=now + dt.timedelta(seconds=LOCK_SECONDS))
        ).rowcount
        self.env.cr.commit()
        if not taken:
            raise UserError(
                f"Thread '{self.name}' is already generating a response; wait for it to "
                "finish."
            )
        return token

    def _renew_generation_lock(self, token: str) -> None:
        table = self._table_obj
        with self.pool.environment() as env:
            env.cr.execute(sa.update(table).where(
                table.c.id == self.id, table.c.generation_lock_token == token,
            ).values(generation_lock_until=_now() + dt.timedelta(seconds=LOCK_SECONDS)))

    def _release_generation_lock(self, token: str) -> None:
        table = self._table_obj
        self.env.cr.execute(sa.update(table).where(
            table.c.id == self.id, table.c.generation_lock_token == token,
        ).values(generation_lock_token=None, generation_lock_until=None))
        self.env.cr.commit()
        self.env.cache.invalidate(ids=self._ids)
