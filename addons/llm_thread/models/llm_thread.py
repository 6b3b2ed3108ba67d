"""Conversation threads: messages, and generating the assistant's reply directly.

``generate(user_message=None, **options)`` (odoo-llm's name, which seed 001 promises keeps
working) and ``generate_response(...)`` (which llm_generation_job extends with ``use_queue``)
are generators of update dicts (shapes in ``addons/llm_thread/updates.py``). ``options`` are
extra fields of the provider's request (temperature, max_tokens...), checked before anything
is written. It commits the caller's transaction, then::

    start   one transaction,   take the thread's generation lock, post the user message,
            committed          build the conversation, create the empty reply (state
                               "streaming")          -> message_create (user), message_create
    stream  no transaction     provider.chat() through a read-only cursor; the lock's lease
            held               renewed in its own short transaction every HEARTBEAT_SECONDS
                                                     -> message_chunk per piece of text
    end     one transaction,   the reply's final text and state (done, error, cancelled),
            committed          usage and finish reason; the lock released
                                                     -> message_update, then done or error

Nothing happens after the last update, so a consumer may stop reading at ``done``. A
provider failure leaves the reply with its partial text, state "error" and the error (the
last update is ``error``, with ``kind`` retryable or permanent); a consumer that stops
earlier closes the HTTP stream and leaves the partial reply "cancelled". Do not write through
the generator's environment while iterating: the generator commits it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core import UserError, ValidationError, fields, models

from .. import updates
from ..reply import ReplyProgress
from ..wire.errors import ProviderError
from ..wire.events import Finish, TextDelta, Usage

LOCK_SECONDS = 120
# Request fields the thread sets itself: not options a caller may pass.
RESERVED_OPTIONS = frozenset({"model", "messages", "stream", "stream_options", "http_client"})
HEARTBEAT_SECONDS = LOCK_SECONDS / 3


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Start:
    """What the start transaction of a direct generation produced."""

    lock_token: str
    reply: ReplyProgress
    provider_id: int
    model: str | None
    messages: list[dict[str, str]]
    updates: list[dict[str, Any]]


class LLMThread(models.Model):
    _name = "llm.thread"
    _description = "LLM conversation thread"
    _order = "write_date desc, id desc"

    name = fields.Char(required=True, default="New chat")
    user_id = fields.Many2one(
        "res.users",
        required=True,
        ondelete="cascade",
        index=True,
        default=lambda self: self.env.uid,
    )
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
        return self.env["llm.message"].create(
            {
                "thread_id": self.id,
                "body": body or "",
                "llm_role": llm_role,
                "author_id": author_id or False,
                **extra,
            }
        )

    def _conversation(self, until=None) -> list[dict[str, str]]:
        """The messages to send: the system prompt, then the finished messages in order (up
        to and including ``until`` when given)."""
        self.ensure_one()
        return self._conversations([until.id if until else None])[0]

    def _conversations(self, until: Sequence[int | None]) -> list[list[dict[str, str]]]:
        """``_conversation`` of each thread of ``self`` (one may come more than once), up to
        the message id at the same place in ``until`` (None: all), in one query: a worker
        prepares the jobs it claims together."""
        domain = [("thread_id", "in", list(dict.fromkeys(self.ids))), ("state", "=", "done")]
        if None not in until:
            domain.append(("id", "<=", max(until, default=0)))
        found = (
            self.env["llm.message"]
            .sudo()
            .search_fetch(domain, ["thread_id", "llm_role", "body"], "id")
        )
        by_thread: dict[int, list] = {}
        for message in found:
            if message.body:
                by_thread.setdefault(message.thread_id.id, []).append(message)
        conversations = []
        for thread, last in zip(self, until, strict=True):
            system = [{"role": "system", "content": thread.system_prompt}]
            conversations.append(
                (system if thread.system_prompt else [])
                + [
                    {"role": message.llm_role, "content": message.body}
                    for message in by_thread.get(thread.id, ())
                    if last is None or message.id <= last
                ]
            )
        return conversations

    # -- direct generation -----------------------------------------------------------------
    def generate_response(self, user_message=None, **options) -> Iterator[dict[str, Any]]:
        """Generate the assistant's reply: here, directly (see ``generate``)."""
        return self.generate(user_message, **options)

    def generate(self, user_message=None, **options) -> Iterator[dict[str, Any]]:
        """Stream the assistant's reply from the provider (see the module docstring)."""
        self.ensure_one()
        self.check_access("write")
        self._check_generation_options(options)
        start = self._start_generation(user_message)
        reply = start.reply
        try:
            yield from start.updates
            yield from self._stream_assistant_reply(
                reply,
                provider_id=start.provider_id,
                model=start.model,
                messages=start.messages,
                options=options,
                heartbeat=functools.partial(self._renew_generation_lock, start.lock_token),
            )
        except GeneratorExit:
            reply.cancel("The consumer stopped listening.")
            raise
        except BaseException as error:
            reply.fail(f"The generation failed unexpectedly ({type(error).__name__}).", "permanent")
            raise
        finally:
            final = self._end_generation(start.lock_token, reply)
        yield from final

    @staticmethod
    def _check_generation_options(options: dict[str, Any]) -> None:
        """ValidationError naming the option unless every one is JSON data the request may
        carry (the thread sets the model, the messages and streaming itself)."""
        for name, value in options.items():
            if name in RESERVED_OPTIONS:
                raise ValidationError(
                    f"Generation option '{name}' is set by the thread itself; leave it out "
                    f"(options are extra request fields such as temperature or max_tokens)."
                )
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                raise ValidationError(
                    f"Generation option '{name}' must be JSON data (a number, string, list "
                    f"or object, no NaN), got {type(value).__name__}."
                ) from None

    def _start_generation(self, user_message: str | None) -> _Start:
        """The start transaction: lock, user message, conversation, empty reply; committed."""
        cr = self.env.cr
        cr.commit()
        try:
            lock_token = self._take_generation_lock()
            created = []
            if user_message:
                posted = self.message_post(body=user_message, llm_role="user")
                created.append(updates.message_create(updates.message_payload(posted)))
            messages = self._conversation()
            message = self.message_post(body="", llm_role="assistant", state="streaming")
            payload = updates.message_payload(message)
            created.append(updates.message_create(payload))
            model = self.model_id
            start = _Start(
                lock_token=lock_token,
                reply=ReplyProgress(message.id, payload),
                provider_id=self.provider_id.id,
                model=model.sudo().name if model else None,
                messages=messages,
                updates=created,
            )
        except BaseException:
            cr.rollback()  # the lock too: a caller that commits later must not keep it
            raise
        cr.commit()
        return start

    def _stream_assistant_reply(
        self,
        reply: ReplyProgress,
        *,
        provider_id: int,
        model: str | None,
        messages: list[dict],
        options: dict[str, Any],
        heartbeat: Callable[[], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream the provider's answer to ``messages`` into ``reply``, yielding a
        ``message_chunk`` update per piece of text.

        Reads nothing through ``self.env`` (the caller's cursor holds no transaction while
        the stream goes; on SQLite one would hold the write lock): the provider is read
        through a read-only cursor. A ``ProviderError`` or a ``UserError`` (e.g. no chat
        model) ends the stream and is recorded in ``reply``, its partial text kept.
        ``heartbeat()`` is called every HEARTBEAT_SECONDS of streaming (renew a lease; raise
        UserError to stop). Closing the generator closes the HTTP stream. Writes nothing:
        the caller records ``reply.message_values()``.
        """
        chunk = updates.message_chunk
        payload, parts = reply.payload, reply.parts
        try:
            with self.pool.environment(readonly=True) as reader:
                provider = reader["llm.provider"].browse(provider_id)
                stream = provider.chat(messages, model=model, **options)
                reader.cr.commit()  # no connection is held while waiting for tokens
                try:
                    beat_at = time.monotonic() + HEARTBEAT_SECONDS
                    for event in stream:
                        if isinstance(event, TextDelta):
                            parts.append(event.text)
                            yield chunk(payload, event.text)
                        elif isinstance(event, Usage):
                            reply.usage = event
                        elif isinstance(event, Finish):
                            reply.finish = event
                        if heartbeat is not None and time.monotonic() > beat_at:
                            heartbeat()
                            beat_at = time.monotonic() + HEARTBEAT_SECONDS
                finally:
                    stream.close()
        except ProviderError as error:
            reply.fail(error.summary, error.kind)
        except UserError as error:
            reply.fail(str(error), "permanent")
        else:
            reply.complete()

    def _end_generation(self, lock_token: str, reply: ReplyProgress) -> list[dict[str, Any]]:
        """The end transaction: the reply's final values, the lock released; committed.
        Returns the final updates."""
        message = self.env["llm.message"].browse(reply.message_id)
        try:
            message.write(reply.message_values())
            payload = updates.message_payload(message)
        finally:
            self._release_generation_lock(lock_token)
            self.env.cr.commit()
        return reply.final_updates(payload)

    # -- the cross-process generation lock ----------------------------------------------------
    # A lease on the thread's row: ``generation_lock_token`` claimed by an atomic conditional
    # UPDATE (free, or expired) and committed, released by the holder, renewed while it
    # streams. Not a row lock (SELECT FOR UPDATE) nor a PostgreSQL advisory lock: both live in
    # a transaction or a session, which a generation does not keep open while it streams (on
    # SQLite an open write transaction blocks every writer, and cursors give their
    # connection back to the pool at each commit). The lease works the same on SQLite and
    # PostgreSQL, across processes and machines, and a crashed process's lock expires after
    # LOCK_SECONDS. On PostgreSQL a concurrent claimer waits for the first one's row lock
    # until it commits, then re-evaluates the condition and finds the thread taken.
    def _take_generation_lock(self) -> str:
        """Claim the lock in the current transaction (the caller commits) or raise
        UserError."""
        now = _now()
        token = secrets.token_hex(12)
        taken = self.sudo().write_where(
            ["|", ("generation_lock_token", "=", False), ("generation_lock_until", "<", now)],
            {
                "generation_lock_token": token,
                "generation_lock_until": now + dt.timedelta(seconds=LOCK_SECONDS),
            },
        )
        if not taken:
            raise UserError(
                f"Thread '{self.name}' is already generating a response; wait for it to finish."
            )
        return token

    def _renew_generation_lock(self, token: str) -> None:
        """Extend the lease in a transaction of its own; UserError when it was lost (it
        expired and another generation took the thread)."""
        with self.pool.environment() as env:
            renewed = (
                env["llm.thread"]
                .browse(self.id)
                .write_where(
                    [("generation_lock_token", "=", token)],
                    {"generation_lock_until": _now() + dt.timedelta(seconds=LOCK_SECONDS)},
                )
            )
        if not renewed:
            raise UserError(
                f"Thread {self.id} lost its generation lock (it expired after {LOCK_SECONDS}s "
                "without renewal and another generation took it)."
            )

    def _release_generation_lock(self, token: str) -> None:
        """Release the lock in the current transaction (the caller commits)."""
        self.sudo().write_where(
            [("generation_lock_token", "=", token)],
            {"generation_lock_token": False, "generation_lock_until": False},
        )
