"""Running one attempt of a job in a worker; every write goes through the job store, fenced
by the attempt's lease (see store.py).

::

    start     (one transaction)    the lease still ours? call the provider's
                                   create_generation_job(job): an override with its own job
                                   API returns the external id, which the store records,
                                   releasing the lease (the status checks follow the job from
                                   there); the default streams here:
    prepare                        the store creates the reply message, or resets the one an
                                   earlier attempt left, empty, state "streaming"; the
                                   conversation is built; commit
    stream    (no transaction held) provider.chat() through a read-only cursor; the text is
              saved to the reply — the first piece at once, then at most every
              FLUSH_INTERVAL — each save a short transaction that first renews the lease
    finish    (one transaction)    job completed + reply done + attempt completed, or failed
                                   (a retry scheduled when retryable), or cancelled (partial
                                   reply kept, marked cancelled), or handed back

If the worker dies anywhere in between, nothing is committed past the last save; the lease
expires and the next attempt reuses the same reply message, so a job never posts two replies.

When the database is unavailable (``DatabaseUnavailable``: connection lost, pool exhausted,
SQLite locked past its busy timeout), the attempt waits it out: the stream goes on, its text
kept in memory until a save gets through; the final write is retried with backoff for up to
OUTAGE_PATIENCE seconds. An attempt that cannot go on (the database failed before its stream
started, or while it read the provider's settings) hands its job back at once, not counted
as a retry. A job never fails for the database's sake.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import certifi
import httpx

from addons.llm_thread.wire.errors import ProviderError
from addons.llm_thread.wire.events import Finish, TextDelta, Usage
from core import DatabaseUnavailable, UserError
from core.registry import Registry

from .store import JobStore, Lease

_logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
OUTAGE_PATIENCE = 300.0  # seconds a final write waits for the database before giving up
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 2.0


class AttemptControl:
    """Lets another thread abort a running attempt: it shuts down the socket of the attempt's
    connection and closes its HTTP client. The shutdown wakes a read blocked in the socket at
    once (a provider sending nothing while it thinks), which closing alone does not. The
    socket is learnt from httpcore's ``trace`` extension as soon as the connection is made,
    so an abort before the response's headers works too."""

    def __init__(self, lease: Lease):
        self.lease = lease
        # "fenced" (cancel requested or lease lost), "shutdown" or "deadline"
        self.aborted: str | None = None
        self.outcome: str | None = None
        self.deadline_seconds: float | None = None
        self._deadline: float | None = None
        self._client: httpx.Client | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def start_deadline(self, seconds: float | None) -> None:
        """The attempt's stream may last ``seconds`` from now (None: no limit)."""
        if seconds:
            self.deadline_seconds = seconds
            self._deadline = time.monotonic() + seconds

    def past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def attach(self, client: httpx.Client) -> None:
        with self._lock:
            self._client = client
            if self.aborted:
                client.close()

    def trace_request(self, request: httpx.Request) -> None:
        """The attempt client's request hook: trace the connection the request goes on."""
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event in _CONNECTED:
            connected = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._socket = connected
                if self.aborted:
                    _shut_down(connected)

    def abort(self, reason: str) -> None:
        with self._lock:
            if self.aborted:
                return
            self.aborted = reason
            if self._socket is not None:
                _shut_down(self._socket)
            if self._client is not None:
                self._client.close()


# httpcore trace events whose return value is the connection's (TCP, then TLS) stream.
_CONNECTED = frozenset(
    {
        "connection.connect_tcp.complete",
        "connection.connect_unix_socket.complete",
        "connection.start_tls.complete",
    }
)


def _shut_down(connected: socket.socket) -> None:
    """Shut the socket down both ways: a thread blocked reading it gets an error at once.
    ``socket.socket.shutdown`` even for a TLS socket: ``SSLSocket.shutdown`` would also drop
    the TLS state from under the reading thread."""
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(connected, socket.SHUT_RDWR)


class _Stopped(Exception):
    """The attempt may not go on: its lease was lost or the job's cancellation requested."""


_CURRENT: contextvars.ContextVar[AttemptControl | None] = contextvars.ContextVar(
    "llmjobs_attempt", default=None
)


def run_attempt(registry: Registry, lease: Lease, control: AttemptControl | None = None) -> str:
    """Run the attempt: the provider's ``create_generation_job`` either streams the reply
    here (the default) or submits it to the provider's own job API and returns its id.
    Returns the outcome: completed, failed, cancelled, submitted, interrupted (handed back)
    or lost (the lease went to someone else)."""
    control = control or AttemptControl(lease)
    token = _CURRENT.set(control)
    try:
        return _start(registry, lease, control)
    except DatabaseUnavailable as error:
        _logger.debug("Generation job %s could not start (%s); handed back", lease.job_id, error)
        return hand_back(registry, control, f"The worker lost the database ({error.reason}).")
    finally:
        _CURRENT.reset(token)


def _start(registry: Registry, lease: Lease, control: AttemptControl) -> str:
    with registry.environment() as env:
        store = JobStore(env)
        if not store.holds(lease):
            return "lost"
        job = store.jobs.browse(lease.job_id)
        try:
            external_id = job.provider_id.create_generation_job(job)
        except DatabaseUnavailable:
            raise
        except Exception as error:
            env.cr.rollback()
            text, retryable, retry_after = _failure(error, lease.job_id)
            return persist(
                registry,
                control,
                lambda store: (
                    "failed"
                    if store.fail(lease, text, retryable=retryable, retry_after=retry_after)
                    else "lost"
                ),
            )
        if external_id is None:
            return control.outcome or "completed"
        return "submitted" if store.submit_external(lease, str(external_id)) else "lost"


def persist(registry: Registry, control: AttemptControl, unit: Callable[[JobStore], str]) -> str:
    """``unit(store)`` in a transaction of its own, tried again with backoff while the
    database is unavailable, for up to OUTAGE_PATIENCE seconds or until the worker shuts
    down. Returns what ``unit`` returns, or "interrupted" when it gave up (the lease then
    expires and the job is taken back)."""
    delay, deadline = _BACKOFF_FIRST, time.monotonic() + OUTAGE_PATIENCE
    while True:
        try:
            with registry.environment() as env:
                return unit(JobStore(env))
        except DatabaseUnavailable as error:  # core.database logs the outage, once
            if control.aborted == "shutdown" or time.monotonic() + delay > deadline:
                _logger.warning(
                    "Generation job %s: %s; giving up: its lease will expire and the job will "
                    "run again",
                    control.lease.job_id,
                    error.reason,
                )
                return "interrupted"
            _logger.debug("Generation job %s waits for the database", control.lease.job_id)
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)


def hand_back(registry: Registry, control: AttemptControl, reason: str) -> str:
    """Give the job back to its queue at once (not counted as a retry)."""
    lease = control.lease
    return persist(
        registry, control, lambda store: "interrupted" if store.release(lease, reason) else "lost"
    )


def stream_job_in_worker(job) -> None:
    """The default ``create_generation_job``: stream the reply from the provider, saving it
    under the attempt's lease, and finish the job. Must run inside a worker's attempt
    (``run_attempt``); commits ``job``'s transaction before streaming."""
    control = _CURRENT.get()
    if control is None or control.lease.job_id != job.id:
        raise UserError(
            f"Job {job.id} runs in a worker: queue it (action_queue) and start a worker "
            "(llmjobs worker), or start it with action_start()."
        )
    registry = job.pool
    started = JobStore(job.env).start_reply(control.lease)
    if started is None:
        job.env.cr.rollback()
        control.outcome = "lost"
        return
    request = _request(*started)
    job.env.cr.commit()  # nothing of the caller's transaction may stay open while streaming
    reply = _Reply(registry, control)
    control.start_deadline(request["deadline"])
    try:
        _stream(registry, request, reply, control)
    except _Stopped:
        control.outcome = reply.stop()
    except DatabaseUnavailable as error:
        control.outcome = hand_back(
            registry, control, f"The worker lost the database ({error.reason})."
        )
    except Exception as error:
        if control.aborted and isinstance(error, ProviderError | httpx.HTTPError | RuntimeError):
            control.outcome = reply.stop()  # we closed the connection ourselves
        else:
            text, retryable, retry_after = _failure(error, job.id)
            control.outcome = reply.fail(text, retryable=retryable, retry_after=retry_after)
    else:
        control.outcome = reply.stop() if control.aborted else reply.complete()


def _failure(error: BaseException, job_id: int) -> tuple[str, bool, float | None]:
    """What to tell people about ``error``, and whether to retry: the provider's own words
    for a ProviderError, the message of a UserError; for anything else (a bug) a sentence
    pointing at the worker's log, where the details go, never the error's text (it may quote
    SQL, parameters or a reply)."""
    if isinstance(error, ProviderError):
        return error.summary, error.retryable, error.retry_after
    if isinstance(error, UserError):
        return str(error), False, None
    if isinstance(error, httpx.HTTPError):
        return f"The connection to the provider failed ({type(error).__name__}).", True, None
    _logger.error("Generation job %s failed unexpectedly", job_id, exc_info=error)
    kind = type(error).__name__
    return f"The worker failed unexpectedly ({kind}); the details are in its log.", False, None


def _request(job, reply) -> dict[str, Any]:
    """What the stream needs: the provider, model, conversation, options, timeout."""
    messages = job.thread_id._conversation(until=job.input_message_id)
    inputs = job.generation_inputs or {}
    if not job.input_message_id and inputs.get("prompt"):
        # A job created with a prompt rather than a posted message (the contract's "Create a
        # job" example): the prompt is the user's turn.
        messages.append({"role": "user", "content": str(inputs["prompt"])})
    return {
        "provider_id": job.provider_id.id,
        "model": job.model_id.name or None,
        "messages": messages,
        "options": dict(inputs.get("options") or {}),
        "timeout": job.provider_id.timeout or None,
        "deadline": job.env["llm.generation.queue"]
        ._get_or_create_queue(job.provider_id.id)
        .attempt_deadline_seconds,
        "message_id": reply.id,
    }


def _stream(
    registry: Registry, request: dict[str, Any], reply: _Reply, control: AttemptControl
) -> None:
    # A client per attempt, so that aborting it closes only this stream; they share one TLS
    # context (loading the CA bundle costs ~25 ms, more than a loopback generation).
    with httpx.Client(
        timeout=request["timeout"],
        verify=_tls_context(),
        event_hooks={"request": [control.trace_request]},
    ) as client:
        control.attach(client)
        with registry.environment(readonly=True) as env:
            provider = env["llm.provider"].browse(request["provider_id"])
            stream = provider.chat(
                request["messages"],
                model=request["model"],
                stream=True,
                http_client=client,
                **request["options"],
            )
            env.cr.commit()  # the stream holds no connection (a later read takes one again)
            try:
                for event in stream:
                    if control.past_deadline():
                        control.abort("deadline")
                    if control.aborted:
                        raise _Stopped
                    if isinstance(event, TextDelta):
                        reply.add(event.text)
                    elif isinstance(event, Usage):
                        reply.usage = event
                    elif isinstance(event, Finish):
                        reply.finish = event
            finally:
                stream.close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


class _Reply:
    """The reply as it grows, and the store's transactions that record it."""

    def __init__(self, registry: Registry, control: AttemptControl):
        self.registry = registry
        self.control = control
        self.lease = control.lease
        self.parts: list[str] = []
        self.saved = 0
        self.last_save = 0.0
        self.usage: Usage | None = None
        self.finish: Finish | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, text: str) -> None:
        self.parts.append(text)
        now = time.monotonic()
        if self.saved == 0 or now - self.last_save >= FLUSH_INTERVAL:
            self.save()
            self.last_save = now

    def save(self) -> None:
        """Save the text so far (renewing the lease), or raise _Stopped. While the database
        is unavailable the text stays here and the stream goes on: the next save sends it."""
        try:
            with self.registry.environment() as env:
                held = JobStore(env).save_progress(self.lease, self.text)
        except DatabaseUnavailable as error:  # core.database logs the outage, once
            _logger.debug("Job %s streams on without saving: %s", self.lease.job_id, error)
            return
        if not held:
            raise _Stopped
        self.saved = len(self.parts)

    def complete(self) -> str:
        values: dict[str, Any] = {"body": self.text, "state": "done"}
        if self.usage is not None:
            values.update(
                prompt_tokens=self.usage.prompt_tokens or 0,
                completion_tokens=self.usage.completion_tokens or 0,
            )
        if self.finish is not None:
            values.update(
                finish_reason=self.finish.reason or False,
                provider_metadata=self.finish.metadata or False,
            )
        return persist(
            self.registry,
            self.control,
            lambda store: "completed" if store.complete(self.lease, values) else "lost",
        )

    def fail(self, error: str, *, retryable: bool, retry_after: float | None = None) -> str:
        return persist(
            self.registry,
            self.control,
            lambda store: (
                "failed"
                if store.fail(
                    self.lease, error, retryable=retryable, retry_after=retry_after, text=self.text
                )
                else "lost"
            ),
        )

    def stop(self) -> str:
        """The attempt was aborted: past its deadline it failed (retryably); otherwise record
        a requested cancellation; on a shutdown hand the job back; a lost lease leaves the job
        to whoever owns it now."""
        if self.control.aborted == "deadline":
            limit = self.control.deadline_seconds
            return self.fail(
                f"The reply took longer than its queue allows ({limit:g} s).", retryable=True
            )
        shutdown = self.control.aborted == "shutdown"

        def stop(store: JobStore) -> str:
            if store.finish_cancelled(self.lease, self.text):
                return "cancelled"
            if shutdown and store.release(self.lease, "The worker shut down during the attempt."):
                return "interrupted"
            return "lost"

        return persist(self.registry, self.control, stop)
