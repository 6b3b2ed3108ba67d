"""The job runner: the part of ``llmjobs worker`` that runs generation jobs.

::

    dispatcher thread   wakes on "job queued" (NOTIFY / in-process signal) or every
                        poll_interval; takes back expired leases and requeues due retries,
                        then claims jobs for its free slots, queue by queue (store.py)
    attempt threads     one per running job (at most `concurrency`): execution.run_attempt
    heartbeat thread    every BEAT_SECONDS, and at once on "cancel" signals: renews the leases
                        of the running attempts in one statement (an attempt whose lease was
                        lost or whose cancellation was requested is aborted: its stream is
                        closed; so is one past its queue's attempt deadline) and beats the
                        worker's row (llm.generation.worker)

Stopping (SIGTERM): the dispatcher ends first, so no claim is in flight; running attempts get
``timeout`` seconds to finish, then are aborted and their jobs handed back to the queue at
once (not counted as a retry); a lease handed to a stopping runner is handed back too. The
worker's row then says it stopped. While the database is unavailable the threads try again
(core.database logs the outage once per process); an attempt that crashes (a bug) fails
retryably, so it neither holds its job until its lease expires nor loops forever.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from core import DatabaseUnavailable
from core.notify import notifier_for
from core.registry import Registry

from .execution import AttemptControl, hand_back, persist, run_attempt
from .signals import CANCEL, CHANNELS, QUEUED
from .store import LEASE_SECONDS, JobStore, Lease

_logger = logging.getLogger(__name__)
_ACTIVE: dict[int, JobRunner] = {}
BEAT_SECONDS = min(2.0, LEASE_SECONDS / 3)
CLAIM_GRACE = 10.0  # seconds a stop waits for a claim in flight, whatever its timeout


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
        self.queues = queues
        self.worker = worker_name()
        self.notifier = notifier_for(registry)
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="llmjobs-attempt")
        self._controls: dict[Lease, AttemptControl] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._provider_ids: list[int] = []
        self._worker_id: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self.registry.environment() as env:
            self._provider_ids = self._resolve_queues(env)
            self._worker_id = (
                env["llm.generation.worker"]
                .register(self.concurrency, self._provider_ids, BEAT_SECONDS)
                .id
            )
        self.notifier.listen(*CHANNELS)
        _ACTIVE[id(self.registry)] = self
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="llmjobs-dispatch", daemon=True
        )
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="llmjobs-heartbeat", daemon=True
        )
        self._dispatcher.start()
        self._heartbeat.start()

    def _resolve_queues(self, env) -> list[int]:
        if self.queues is None:
            return []
        providers = env["llm.provider"].search([("name", "in", list(self.queues))])
        missing = sorted(set(self.queues) - set(providers.mapped("name")))
        if missing:
            from core import RegistryError

            raise RegistryError(
                f"The worker's queues name unknown providers: "
                f"{', '.join(missing)} (LLMJOBS_WORKER_QUEUES)."
            )
        return providers.ids

    def stop(self, timeout: float = 10.0) -> None:
        """Finish or hand back the running attempts, then stop."""
        with self._lock:  # no submit() after this: see submit()
            self._stopping.set()
        self.notifier.signal(QUEUED)  # wake the dispatcher and the heartbeat so they see
        self.notifier.signal(CANCEL)  # the stop
        deadline = time.monotonic() + timeout
        if self._dispatcher is not None:  # a claim in flight ends with its leases submitted
            self._dispatcher.join(timeout=max(timeout, CLAIM_GRACE))  # (so handed back)
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            controls = list(self._controls.values())
        for control in controls:
            control.abort("shutdown")
        self._executor.shutdown(wait=True)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        _ACTIVE.pop(id(self.registry), None)
        self._mark_stopped()
        self.notifier.close()

    def _mark_stopped(self) -> None:
        try:
            with self.registry.environment() as env:
                env["llm.generation.worker"].browse(self._worker_id).mark_stopped()
        except DatabaseUnavailable as error:
            _logger.warning(
                "Could not record the worker's stop (%s); it will read as dead "
                "once its beats are missed",
                error.reason,
            )

    # -- slots -------------------------------------------------------------------------------
    def _running(self) -> int:
        with self._lock:
            return len(self._controls)

    def free_slots(self) -> int:
        return 0 if self._stopping.is_set() else max(self.concurrency - self._running(), 0)

    def submit(self, lease: Lease) -> None:
        """Run the attempt of ``lease`` on a free slot; a stopping runner hands it back."""
        control = AttemptControl(lease)
        with self._lock:
            accepted = not self._stopping.is_set()
            if accepted:
                self._controls[lease] = control
                self._executor.submit(self._run, control)
        if not accepted:
            hand_back(self.registry, control, "The worker was stopping when it claimed the job.")

    def _run(self, control: AttemptControl) -> None:
        lease = control.lease
        try:
            run_attempt(self.registry, lease, control)
        except Exception as error:
            _logger.exception("The attempt of generation job %s crashed", lease.job_id)
            message = f"The worker's attempt crashed ({type(error).__name__}); see its log."
            persist(
                self.registry,
                control,
                lambda store: "failed" if store.fail(lease, message, retryable=True) else "lost",
            )
        finally:
            with self._lock:
                self._controls.pop(lease, None)
            self.notifier.signal(QUEUED)  # a slot is free: look for more work

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

    def _maintenance(self) -> None:
        with self.registry.environment() as env:
            JobStore(env).requeue_expired()
        with self.registry.environment() as env:
            JobStore(env).retry_due()

    def _claim(self) -> None:
        while self.free_slots():
            with self.registry.environment() as env:
                domain = [("enabled", "=", True)]
                if self._provider_ids:
                    domain.append(("provider_id", "in", self._provider_ids))
                providers = env["llm.generation.queue"].search(domain).mapped("provider_id").ids
            leases: list[Lease] = []
            for provider_id in providers:
                free = self.free_slots() - len(leases)
                if free <= 0:
                    break
                with self.registry.environment() as env:
                    leases += JobStore(env).claim(provider_id, self.worker, limit=free)
            for lease in leases:
                self.submit(lease)
            if not leases:
                return

    # -- heartbeat ---------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            since = self.notifier.generation(CANCEL)
            try:
                self._beat()
            except DatabaseUnavailable:  # core.database logs the outage, once
                pass
            except Exception:
                _logger.exception("The worker's heartbeat failed; trying again shortly")
            self.notifier.wait(CANCEL, "", since, BEAT_SECONDS)

    def _beat(self) -> None:
        with self._lock:
            controls = {lease: c for lease, c in self._controls.items() if not c.aborted}
        with self.registry.environment() as env:
            held = set(JobStore(env).renew(list(controls)))
            env["llm.generation.worker"].browse(self._worker_id).beat(len(controls), BEAT_SECONDS)
        for lease, control in controls.items():
            if control.past_deadline():  # a reply trickling in, or a provider gone silent
                control.abort("deadline")
            elif lease not in held:
                control.abort("fenced")
