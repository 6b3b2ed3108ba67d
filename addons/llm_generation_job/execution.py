"""One attempt of a job, apart from its stream: what the stream needs, prepared in the claim's
transaction; the path of providers that run jobs on their side; writes retried while the
database is unavailable; what people are told when an attempt fails.

::

    prepare        (the claim's     the request read (the conversation, then the provider's
                   transaction)     wire request, or its own service), the lease checked, the
                                    reply message created, or reset by a later attempt (with a
                                    restart in the stream log): all the stream needs, so that it
                                    reads nothing while it goes
    stream         (engine.py)      the provider's answer; its pieces and its end recorded by
                                    the engine's writer, fenced by the lease
    provider jobs  a provider overriding ``create_generation_job`` runs its hook in a thread
                   of the runner (``run_attempt``), in a transaction of its own: the external
                   id it returns is recorded and the lease released (status checks follow the
                   job from there); a hook that falls back to the default streams through the
                   engine and returns when the stream has ended.

If the worker dies anywhere, nothing is committed past the writer's last flush; the lease
expires and the next attempt reuses the reply message, so a job never posts two replies.
While the database is unavailable, a stream goes on (the writer waits the outage out); an
attempt that cannot start hands its job back, not counted as a retry.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from addons.llm_thread.wire.errors import ProviderError
from core import DatabaseUnavailable, UserError
from core.registry import Registry

from .store import JobStore, Lease

if TYPE_CHECKING:
    from .engine import StreamEngine

_logger = logging.getLogger(__name__)

OUTAGE_PATIENCE = 300.0  # seconds a final write waits for the database before giving up
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 2.0
T = TypeVar("T")


@dataclass(frozen=True)
class PreparedAttempt:
    """All a stream needs, read in the claim's transaction. ``protocol`` names a built-in wire
    protocol (``stream_args`` are the arguments of ``wire.astream_chat``); without one, the
    provider's own service runs with ``model``, ``messages`` and ``options``."""

    lease: Lease
    seq: int  # the stream log's last seq before this attempt
    attempt: int  # the attempt's number
    deadline: float | None  # seconds the stream may last (its queue's attempt deadline)
    protocol: str | None
    stream_args: dict[str, Any]
    provider_id: int
    model: str | None
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    background: bool = False  # run as a background response (``wire.astream_background``)
    resume: tuple[str, int] | None = None  # re-attach to this response after this cursor
    text: str = ""  # the reply so far, when it resumes


def prepare(store: JobStore, lease: Lease) -> PreparedAttempt | None:
    """The attempt's start (see the module docstring); None when the lease was lost. Raises
    UserError when no request can be made (no chat model, an unusable key...)."""
    return prepare_many(store, [lease])[0]


def prepare_many(store: JobStore, leases: Sequence[Lease]) -> list[PreparedAttempt | None]:
    """``prepare`` for many attempts, their jobs read together and their replies started
    together; an error of one raises for all (the caller prepares each alone then)."""
    jobs = store.jobs.browse([lease.job_id for lease in leases])
    requests = []
    for job, (messages, model, options) in zip(jobs, jobs._generation_requests(), strict=True):
        provider = job.provider_id
        wired = provider._wire_stream(messages, model, **options)
        deadline = store.queue(provider.id).attempt_deadline_seconds
        requests.append((job, messages, model, options, wired, deadline))
    prepared: list[PreparedAttempt | None] = []
    for lease, started, request in zip(leases, store.start_replies(leases), requests, strict=True):
        job, messages, model, options, wired, deadline = request
        if started is None:
            prepared.append(None)
            continue
        protocol, stream_args = wired or (None, {})
        background = job.execution_mode == "background" and protocol == "openai"
        prepared.append(
            PreparedAttempt(
                lease=lease,
                seq=started.seq,
                attempt=started.attempt,
                deadline=deadline or None,
                protocol=protocol,
                stream_args=stream_args,
                provider_id=job.provider_id.id,
                model=model,
                messages=messages,
                options=options,
                background=background,
                resume=started.resume if background else None,
                text=started.text if background else "",
            )
        )
    return prepared


@dataclass
class Attempt:
    """An attempt run through a provider's job hook: its lease, the engine that streams for
    it, how it ended, and why it was stopped (a hook cannot be interrupted: it is told)."""

    lease: Lease
    engine: StreamEngine
    outcome: str | None = None
    aborted: str | None = None

    def abort(self, reason: str) -> None:
        self.aborted = self.aborted or reason


_CURRENT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "llmjobs_attempt", default=None
)


def run_attempt(registry: Registry, lease: Lease, engine: StreamEngine | None = None) -> str:
    """Run the attempt through its provider's ``create_generation_job``: submitted to the
    provider's own job API (its id is recorded), or streamed by ``engine`` (the runner's in a
    worker; a temporary one elsewhere) until it ends. Returns the outcome: completed,
    failed, cancelled, submitted, interrupted (handed back) or lost (the lease went to
    someone else)."""
    if engine is None:
        from .engine import StreamEngine
        from .runner import active_runner

        runner = active_runner(registry)
        if runner is None:
            with StreamEngine(registry, slots=1) as temporary:
                return run_attempt(registry, lease, temporary)
        engine = runner.engine
    attempt = Attempt(lease, engine)
    engine.hold(lease, attempt)
    token = _CURRENT.set(attempt)
    try:
        return _start(registry, attempt)
    except DatabaseUnavailable as error:
        _logger.debug("Generation job %s could not start (%s); handed back", lease.job_id, error)
        return hand_back(registry, attempt, f"The worker lost the database ({error.reason}).")
    finally:
        _CURRENT.reset(token)
        engine.unhold(lease)


def _start(registry: Registry, attempt: Attempt) -> str:
    lease = attempt.lease
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
            return fail(registry, attempt, *describe_failure(error, lease.job_id))
        if external_id is None:
            return attempt.outcome or "completed"
        return "submitted" if store.submit_external(lease, str(external_id)) else "lost"


def stream_job_in_worker(job) -> None:
    """The default ``create_generation_job``: prepare the attempt in ``job``'s transaction,
    commit it, stream the reply through the attempt's engine and return when it has ended.
    Must run inside ``run_attempt`` (a worker's dispatcher prepares and streams its jobs
    without calling the hook)."""
    attempt = _CURRENT.get()
    if attempt is None or attempt.lease.job_id != job.id:
        raise UserError(
            f"Job {job.id} runs in a worker: queue it (action_queue) and start a worker "
            "(llmjobs worker), or start it with action_start()."
        )
    registry = job.pool
    try:
        prepared = prepare(JobStore(job.env), attempt.lease)
    except UserError as error:
        job.env.cr.rollback()
        attempt.outcome = fail(registry, attempt, str(error), False, None)
        return
    if prepared is None:
        job.env.cr.rollback()
        attempt.outcome = "lost"
        return
    job.env.cr.commit()  # nothing of the caller's transaction may stay open while streaming
    stream = attempt.engine.submit(prepared)
    attempt.engine.unhold(attempt.lease)  # the stream renews it now
    stream.recorded.wait()
    attempt.outcome = stream.result


def fail(
    registry: Registry,
    attempt: Attempt,
    text: str,
    retryable: bool,
    retry_after: float | None,
) -> str:
    """Fail the attempt (a retry scheduled when ``retryable``), waiting out an outage."""
    lease = attempt.lease
    return persist(
        registry,
        attempt,
        lambda store: (
            "failed"
            if store.fail(lease, text, retryable=retryable, retry_after=retry_after)
            else "lost"
        ),
    )


def persist(registry: Registry, attempt: Attempt, unit: Callable[[JobStore], str]) -> str:
    """``unit(store)`` as ``retrying`` runs it, until the worker shuts down. Returns what
    ``unit`` returns, or "interrupted" when it gave up (the lease then expires and the job is
    taken back)."""
    try:
        return retrying(registry, unit, stop=lambda: attempt.aborted == "shutdown")
    except DatabaseUnavailable as error:
        _logger.warning(
            "Generation job %s: %s; giving up: its lease will expire and the job will run again",
            attempt.lease.job_id,
            error.reason,
        )
        return "interrupted"


def retrying(
    registry: Registry, unit: Callable[[JobStore], T], stop: Callable[[], bool] = lambda: False
) -> T:
    """``unit(store)`` in a transaction of its own, tried again with backoff while the
    database is unavailable, for up to OUTAGE_PATIENCE seconds or until ``stop()``; then the
    last DatabaseUnavailable is raised."""
    delay, deadline = _BACKOFF_FIRST, time.monotonic() + OUTAGE_PATIENCE
    while True:
        try:
            with registry.environment() as env:
                return unit(JobStore(env))
        except DatabaseUnavailable:  # core.database logs the outage, once
            if stop() or time.monotonic() + delay > deadline:
                raise
            _logger.debug("Waiting for the database")
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)


def hand_back(registry: Registry, attempt: Attempt, reason: str) -> str:
    """Give the job back to its queue at once (not counted as a retry)."""
    lease = attempt.lease
    return persist(
        registry,
        attempt,
        lambda store: "interrupted" if store.release(lease, reason) else "lost",
    )


def describe_failure(error: BaseException, job_id: int) -> tuple[str, bool, float | None]:
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
