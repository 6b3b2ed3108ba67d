"""The job runner: the part of ``llmjobs worker`` that runs generation jobs.

::

    dispatcher thread   wakes on "job queued" (NOTIFY / in-process signal) or every
                        poll_interval (a busy worker claims at most every CLAIM_INTERVAL);
                        takes back expired leases and requeues due retries,
                        then, queue by queue, claims jobs for the free slots and prepares
                        their attempts in the same transaction (store.py, execution.py) and
                        hands them to the engine
    stream engine       (engine.py) one event loop streaming every reply, one writer thread
                        recording their pieces and ends, renewing leases and beating the
                        worker's row (llm.generation.worker)
    hook threads        a few, for providers that run jobs on their side: their
                        ``create_generation_job`` hook (execution.run_attempt)

A worker holds a few database connections (dispatcher, writer, hook threads, listener),
however many jobs it runs; it claims only what it has slots for.

Stopping (SIGTERM): the dispatcher ends first, so no claim is in flight; running streams get
``timeout`` seconds to finish, then are stopped and their jobs handed back to the queue at
once (not counted as a retry); a lease handed to a stopping runner is handed back too. The
worker's row then says it stopped. While the database is unavailable the threads try again
(core.database logs the outage once per process); an attempt that crashes (a bug) fails
retryably, so it neither holds its job until its lease expires nor loops forever.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from core import DatabaseUnavailable, RegistryError
from core.notify import notifier_for
from core.registry import Registry

from .engine import StreamEngine
from .execution import (
    Attempt,
    describe_failure,
    hand_back,
    persist,
    prepare,
    prepare_many,
    run_attempt,
)
from .signals import CHANNELS, QUEUED
from .store import LEASE_SECONDS, JobStore, Lease
from .writer import BEAT_SECONDS

_logger = logging.getLogger(__name__)
_ACTIVE: dict[int, JobRunner] = {}
CLAIM_GRACE = 10.0  # seconds a stop waits for a claim in flight, whatever its timeout
HOOK_THREADS = 4  # provider job hooks (create_generation_job overrides) run at once
CLAIM_INTERVAL = 0.02
"""Seconds between two claims of a busy worker (one running jobs): the slots its streams free
meanwhile are claimed together, in one transaction, not one claim each (each claim reads
its queue, its limits and its budgets). An idle worker claims at once."""


def active_runner(registry: Registry) -> JobRunner | None:
    """The runner working for this registry in this process, if one is running."""
    return _ACTIVE.get(id(registry))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobRunner:
    name = "generation-jobs"

    def __init__(
        self,
        registry: Registry,
        concurrency: int = 8,
        poll_interval: float = 2.0,
        queues: list[str] | None = None,
    ):
        """``queues``: the names of the providers whose queues it serves (None: all)."""
        self.registry = registry
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._claimed_at = 0.0  # (monotonic) the last claim that started jobs
        self.queues = queues
        self.worker = worker_name()
        self.notifier = notifier_for(registry)
        self.engine = StreamEngine(
            registry,
            slots=concurrency,
            on_beat=self._beat,
            on_free=lambda: self.notifier.signal(QUEUED),  # claim more at once
        )
        self._hooks = ThreadPoolExecutor(HOOK_THREADS, thread_name_prefix="llmjobs-hook")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._provider_ids: list[int] = []
        self._worker_id: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.concurrency = _streams_within_open_files(self.concurrency)
        with self.registry.environment() as env:
            self._provider_ids = self._resolve_queues(env)
            self._worker_id = (
                env["llm.generation.worker"]
                .register(self.concurrency, self._provider_ids, BEAT_SECONDS)
                .id
            )
        self.notifier.listen(*CHANNELS)
        self.notifier.watch_commits(QUEUED)  # SQLite: a job queued by another process
        self.engine.start()
        _ACTIVE[id(self.registry)] = self
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="llmjobs-dispatch", daemon=True
        )
        self._dispatcher.start()

    def _resolve_queues(self, env) -> list[int]:
        if self.queues is None:
            return []
        providers = env["llm.provider"].search([("name", "in", list(self.queues))])
        missing = sorted(set(self.queues) - set(providers.mapped("name")))
        if missing:
            raise RegistryError(
                f"The worker's queues name unknown providers: {', '.join(missing)} "
                "(LLMJOBS_WORKER_QUEUES)."
            )
        return providers.ids

    def stop(self, timeout: float = 10.0) -> None:
        """Finish or hand back the running attempts, then stop."""
        with self._lock:  # no submit() after this: see submit()
            self._stopping.set()
        self.notifier.signal(QUEUED)  # wake the dispatcher so that it sees the stop
        if self._dispatcher is not None:  # a claim in flight ends with its leases handed
            self._dispatcher.join(timeout=max(timeout, CLAIM_GRACE))  # to the engine
        self.engine.stop(timeout)
        self._hooks.shutdown(wait=True)
        _ACTIVE.pop(id(self.registry), None)
        self._mark_stopped()
        self.notifier.close()

    def _mark_stopped(self) -> None:
        try:
            with self.registry.environment() as env:
                env["llm.generation.worker"].browse(self._worker_id).mark_stopped()
        except DatabaseUnavailable as error:
            _logger.warning(
                "Could not record the worker's stop (%s); it will read as dead once its beats "
                "are missed",
                error.reason,
            )

    def _beat(self, env) -> None:
        """The writer's beat, in its transaction: the worker's row."""
        env["llm.generation.worker"].browse(self._worker_id).beat(
            self.engine.running(), BEAT_SECONDS
        )

    # -- slots -------------------------------------------------------------------------------
    def free_slots(self) -> int:
        if self._stopping.is_set():
            return 0
        return max(self.concurrency - self.engine.running(), 0)

    def submit(self, lease: Lease) -> None:
        """Run the attempt of a lease claimed elsewhere (a cron, action_start) through its
        provider's hook; a stopping runner hands it back."""
        with self._lock:
            accepted = not self._stopping.is_set()
            if accepted:
                self.engine.hold(lease, Attempt(lease, self.engine))  # its slot, from now
                self._hooks.submit(self._run_hook, lease)
        if not accepted:
            attempt = Attempt(lease, self.engine)
            hand_back(self.registry, attempt, "The worker was stopping when it claimed the job.")

    def _run_hook(self, lease: Lease) -> None:
        try:
            run_attempt(self.registry, lease, self.engine)
        except Exception as error:
            _logger.exception("The attempt of generation job %s crashed", lease.job_id)
            message = f"The worker's attempt crashed ({type(error).__name__}); see its log."
            persist(
                self.registry,
                Attempt(lease, self.engine),
                lambda store: "failed" if store.fail(lease, message, retryable=True) else "lost",
            )
        finally:
            self.engine.unhold(lease)  # (run_attempt has, unless it crashed first)

    # -- dispatcher --------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        maintenance_due = 0.0
        while not self._stopping.is_set():
            since = self.notifier.generation(QUEUED)
            try:
                if time.monotonic() >= maintenance_due:
                    self._maintenance()
                    maintenance_due = time.monotonic() + min(LEASE_SECONDS / 3, self.poll_interval)
                self._claim()
            except DatabaseUnavailable:  # core.database logs the outage, once
                self._stopping.wait(1)
            except Exception:
                _logger.exception("Claiming generation jobs failed; trying again shortly")
                self._stopping.wait(1)
            self.notifier.wait(QUEUED, "", since, self.poll_interval)
            if self.engine.running():  # busy: the slots freed meanwhile are claimed together
                self._stopping.wait(max(self._claimed_at + CLAIM_INTERVAL - time.monotonic(), 0))

    def _maintenance(self) -> None:
        with self.registry.environment() as env:
            JobStore(env).requeue_expired()
        with self.registry.environment() as env:
            JobStore(env).retry_due()

    def _claim(self) -> None:
        while self.free_slots():
            # A read-only look first: most wake-ups find nothing to claim, and need not take
            # a write lock (SQLite) nor a queue's row lock (PostgreSQL) to learn it.
            with self.registry.environment(readonly=True) as env:
                now = dt.datetime.now(dt.UTC)
                queue = "provider_id.generation_queue_ids"  # (a provider has one)
                domain = [
                    ("state", "=", "queued"),
                    ("execution_mode", "!=", "batch"),  # the status cron sends those
                    "|",
                    ("eligible_at", "=", False),
                    ("eligible_at", "<=", now),
                    (f"{queue}.enabled", "=", True),
                    "|",
                    (f"{queue}.eligible_at", "=", False),
                    (f"{queue}.eligible_at", "<=", now),
                ]
                if self._provider_ids:
                    domain.append(("provider_id", "in", self._provider_ids))
                waiting = env["llm.generation.job"].read_group(domain, ["provider_id"], ["__count"])
                provider_ids = [group["provider_id"] for group in waiting]
            filled = False  # a claim took all it asked for: its queue may hold more
            started = 0
            for provider_id in provider_ids:
                free = self.free_slots()
                if free <= 0:
                    break
                claimed = self._claim_provider(provider_id, free)
                started += claimed
                filled |= claimed == free
            if started:
                self._claimed_at = time.monotonic()
            if not filled:  # every queue gave less than asked: nothing more is waiting now
                return  # (a job queued since wakes the dispatcher: its signal came after)

    def _claim_provider(self, provider_id: int, free: int) -> int:
        """Claim and prepare up to ``free`` jobs of the provider in one transaction, then
        start them (streamed by the engine, or run by the provider's job hook); returns how
        many were claimed."""
        with self.registry.environment() as env:
            provider = env["llm.provider"].sudo().browse(provider_id)
            try:
                # The transaction's first unit: no savepoint, an error rolls it all back.
                with env.cr.atomic():
                    streams = provider._streams_in_worker()  # (read once for the claim)
                    store = JobStore(env)
                    leases = store.claim(provider_id, self.worker, limit=free)
                    prepared = prepare_many(store, leases) if streams else []
            except DatabaseUnavailable:
                raise
            except Exception:  # one attempt cannot be prepared: claimed again, each alone
                streams = provider._streams_in_worker()
                store = JobStore(env)
                with env.cr.atomic():
                    leases = store.claim(provider_id, self.worker, limit=free)
                prepared = [self._prepare(env, store, lease) for lease in leases] if streams else []
        if not streams:
            for lease in leases:
                self.submit(lease)
        for attempt in prepared:
            if attempt is not None:
                self.engine.submit(attempt)
        return len(leases)

    @staticmethod
    def _prepare(env, store: JobStore, lease: Lease):
        """``prepare``, all or nothing: an attempt that cannot be prepared fails alone."""
        try:
            with env.cr.atomic():
                return prepare(store, lease)
        except DatabaseUnavailable:
            raise
        except Exception as error:
            text, retryable, retry_after = describe_failure(error, lease.job_id)
            store.fail(lease, text, retryable=retryable, retry_after=retry_after)
            return None


FILES_PER_STREAM = 2  # its socket, and a share of the database connections
FILES_BESIDES = 64  # the database, the notifier, the logs, Python's own


def _streams_within_open_files(concurrency: int) -> int:
    """How many streams this process can hold at once, at most ``concurrency``: its limit of
    open files is raised to what they need, up to the hard limit; when even that is too low,
    fewer streams run (the other jobs wait in the queue) and the log says so."""
    needed = FILES_PER_STREAM * concurrency + FILES_BESIDES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return concurrency
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target >= needed:
        return concurrency
    allowed = max(1, (target - FILES_BESIDES) // FILES_PER_STREAM)
    _logger.warning(
        "The worker may open %d files at most (needed: %d for a concurrency of %d): it runs "
        "%d jobs at once. Raise the hard limit (ulimit -Hn) or lower "
        "LLMJOBS_WORKER_CONCURRENCY.",
        target,
        needed,
        concurrency,
        allowed,
    )
    return allowed
