"""Running one attempt of a job in a worker, with every write fenced by the attempt's lease.

::

    start     (short transaction)  the lease still ours? call the provider's
                                   create_generation_job(job): an override with its own job
                                   API returns the external id, which is recorded, and the
                                   lease released (the status cron follows the job from
                                   there); the default streams here:
    prepare                        build the conversation; create the reply message — or
                                   reuse the one an earlier, dead attempt left — empty, state
                                   "streaming"; commit; signal progress
    stream    (no transaction held) provider.chat() through a read-only cursor; chunks are
              flushed to the reply message — the first at once, then at most every
              FLUSH_INTERVAL — each flush in a short transaction that first renews the lease
              (a fenced UPDATE: it fails when the lease was taken over or a cancel requested)
    finish    (one transaction)    fenced: job completed + reply done + attempt completed, or
                                   failed (retry scheduled when retryable), or cancelled
                                   (partial reply kept, marked cancelled)

If the worker dies anywhere in between, nothing is committed past the last flush; the lease
expires and the next attempt reuses the same reply message, so a job never posts two replies.
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
from typing import Any

import certifi
import httpx

from addons.llm_thread.wire.errors import ProviderError
from addons.llm_thread.wire.events import Finish, TextDelta, Usage
from core import UserError
from core.registry import Registry

from .claim import Lease
from .notify import PROGRESS, QUEUED, notifier_for

_logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
JOB = "llm.generation.job"


class AttemptControl:
    """Lets another thread abort a running attempt: it shuts down the socket of the attempt's
    connection and closes its HTTP client. The shutdown wakes a read blocked in the socket at
    once (a provider sending nothing while it thinks), which closing alone does not. The
    socket is learnt from httpcore's ``trace`` extension as soon as the connection is made,
    so an abort before the response's headers works too."""

    def __init__(self, lease: Lease):
        self.lease = lease
        self.aborted: str | None = None  # "fenced" (cancel or lease lost) or "shutdown"
        self.outcome: str | None = None
        self._client: httpx.Client | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

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
_CONNECTED = frozenset({"connection.connect_tcp.complete",
                        "connection.connect_unix_socket.complete",
                        "connection.start_tls.complete"})


def _shut_down(connected: socket.socket) -> None:
    """Shut the socket down both ways: a thread blocked reading it gets an error at once.
    ``socket.socket.shutdown`` even for a TLS socket: ``SSLSocket.shutdown`` would also drop
    the TLS state from under the reading thread."""
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(connected, socket.SHUT_RDWR)


class _Stopped(Exception):
    """The attempt may not go on: its lease was lost or the job's cancellation requested."""


_CURRENT: contextvars.ContextVar[AttemptControl | None] = contextvars.ContextVar(
    "llmjobs_attempt", default=None)


def run_attempt(registry: Registry, lease: Lease, control: AttemptControl | None = None) -> str:
    """Run the attempt: the provider's ``create_generation_job`` either streams the reply
    here (the default) or submits it to the provider's own job API and returns its id."""
    control = control or AttemptControl(lease)
    token = _CURRENT.set(control)
    try:
        with registry.environment() as env:
            job = env[JOB].browse(lease.job_id)
            if job.state != "running" or job.lease_token != lease.token:
                return "lost"
            try:
                external_id = job.provider_id.create_generation_job(job)
            except Exception as error:
                job = env[JOB].browse(lease.job_id)
                if not job._renew_lease(lease.token, allow_cancelled=True):
                    return "lost"
                job._fail_attempt(f"The provider refused the job: {error}",
                                  retryable=getattr(error, "retryable", False),
                                  retry_after=getattr(error, "retry_after", None))
                return "failed"
            if external_id is None:
                return control.outcome or "completed"
            env[JOB].browse(lease.job_id)._fenced_update(lease.token, {
                "external_job_id": str(external_id), "lease_token": False,
                "lease_expires_at": False,
            })
            return "submitted"
    finally:
        _CURRENT.reset(token)


def stream_job_in_worker(job) -> None:
    """The default ``create_generation_job``: stream the reply from the provider, flushing it
    to the reply message under the attempt's lease, and finish the job. Must run inside a
    worker's attempt (``run_attempt``); commits ``job``'s transaction before streaming."""
    control = _CURRENT.get()
    if control is None or control.lease.job_id != job.id:
        raise UserError(
            f"Job {job.id} runs in a worker: queue it (action_queue) and start a worker "
            "(llmjobs worker), or start it with action_start()."
        )
    lease, registry = control.lease, job.pool
    request = job._prepare_generation(lease.token)
    notifier_for(registry).send(job.env.cr, PROGRESS, job.id)
    job.env.cr.commit()  # nothing of the caller's transaction may stay open while streaming
    reply = _Reply(registry, lease, request["message_id"])
    try:
        _stream(registry, request, reply, control)
    except _Stopped:
        control.outcome = reply.stop(control.aborted)
    except (ProviderError, httpx.HTTPError, RuntimeError) as error:
        if control.aborted:  # we closed the connection ourselves (cancel, lease, shutdown)
            control.outcome = reply.stop(control.aborted)
        elif isinstance(error, ProviderError):
            control.outcome = reply.fail(str(error), retryable=error.retryable,
                                         retry_after=error.retry_after)
        else:
            control.outcome = reply.fail(
                f"Connection to the provider failed: {type(error).__name__}", retryable=True)
    except Exception as error:
        _logger.exception("Generation job %s failed unexpectedly", lease.job_id)
        control.outcome = reply.fail(f"Unexpected error in the worker: {error}",
                                     retryable=False)
    else:
        control.outcome = reply.stop(control.aborted) if control.aborted else reply.complete()


def _stream(registry: Registry, request: dict[str, Any], reply: _Reply,
            control: AttemptControl) -> None:
    # A client per attempt, so that aborting it closes only this stream; they share one TLS
    # context (loading the CA bundle costs ~25 ms, more than a loopback generation).
    with httpx.Client(timeout=request["timeout"], verify=_tls_context(),
                      event_hooks={"request": [control.trace_request]}) as client:
        control.attach(client)
        with registry.environment(readonly=True) as env:
            provider = env["llm.provider"].browse(request["provider_id"])
            stream = provider.chat(request["messages"], model=request["model"], stream=True,
                                   http_client=client, **request["options"])
            env.cr.commit()  # the stream holds no connection (a later read takes one again)
            try:
                for event in stream:
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
    """The reply message as it grows, and the fenced transactions that record it."""

    def __init__(self, registry: Registry, lease: Lease, message_id: int):
        self.registry = registry
        self.lease = lease
        self.message_id = message_id
        self.notifier = notifier_for(registry)
        self.parts: list[str] = []
        self.flushed = 0
        self.last_flush = 0.0
        self.usage: Usage | None = None
        self.finish: Finish | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, text: str) -> None:
        self.parts.append(text)
        now = time.monotonic()
        if self.flushed == 0 or now - self.last_flush >= FLUSH_INTERVAL:
            self.flush()
            self.last_flush = now

    def flush(self) -> None:
        """Save the text so far (and renew the lease), or raise _Stopped."""
        with self.registry.environment() as env:
            job = env[JOB].browse(self.lease.job_id)
            if not job._renew_lease(self.lease.token):
                raise _Stopped
            env["llm.message"].browse(self.message_id).write({"body": self.text})
            self.notifier.send(env.cr, PROGRESS, self.lease.job_id)
        self.flushed = len(self.parts)

    def complete(self) -> str:
        with self.registry.environment() as env:
            job = env[JOB].browse(self.lease.job_id)
            values = {"body": self.text, "state": "done"}
            if self.usage is not None:
                values.update(prompt_tokens=self.usage.prompt_tokens or 0,
                              completion_tokens=self.usage.completion_tokens or 0)
            if self.finish is not None:
                values.update(finish_reason=self.finish.reason or False,
                              provider_metadata=self.finish.metadata or False)
            if not job._complete_attempt(self.lease.token, self.message_id, values):
                env.cr.rollback()
                return "lost"
            self.notifier.send(env.cr, PROGRESS, self.lease.job_id)
        return "completed"

    def fail(self, error: str, *, retryable: bool, retry_after: float | None = None) -> str:
        with self.registry.environment() as env:
            job = env[JOB].browse(self.lease.job_id)
            if not job._renew_lease(self.lease.token, allow_cancelled=True):
                return "lost"
            env["llm.message"].browse(self.message_id).write(
                {"body": self.text, "state": "error", "error": error})
            job._fail_attempt(error, retryable=retryable, retry_after=retry_after)
            self.notifier.send(env.cr, PROGRESS, self.lease.job_id)
        return "failed"

    def stop(self, reason: str | None) -> str:
        """The attempt was aborted: record a requested cancellation; for a lost lease or a
        shutdown, leave the job to whoever owns it now."""
        with self.registry.environment() as env:
            job = env[JOB].browse(self.lease.job_id)
            if job.state != "running" or job.lease_token != self.lease.token:
                return "lost"
            if job.cancel_requested:
                env["llm.message"].browse(self.message_id).write({"body": self.text})
                job._finish("cancelled", error="Cancelled while running.")
                self.notifier.send(env.cr, PROGRESS, self.lease.job_id)
                return "cancelled"
        return "lost" if reason != "shutdown" else "interrupted"


def release_for_shutdown(registry: Registry, lease: Lease) -> None:
    """Hand an interrupted job back to its queue at once (not counted as a retry)."""
    with registry.environment() as env:
        job = env[JOB].browse(lease.job_id)
        released = job._fenced_update(lease.token, {
            "state": "queued", "started_at": False, "lease_token": False,
            "lease_expires_at": False,
        }, allow_cancelled=True)
        if released:
            job.attempt_ids.filtered(lambda a: a.outcome == "running").write({
                "outcome": "lost", "error_message": "The worker shut down during the attempt.",
                "ended_at": job._fields["started_at"].now(),
            })
            notifier_for(registry).send(env.cr, QUEUED, job.provider_id.id)

