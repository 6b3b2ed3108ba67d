"""The job runner: the part of ``llmjobs worker`` that runs generation jobs.

::

    dispatcher thread   wakes on "job queued" (NOTIFY / in-process signal) or every
                        poll_interval; takes back expired leases and requeues due retries
                        (cheap indexed queries), then claims jobs for its free slots, queue
                        by queue (claim.py)
    attempt threads     one per running job (at most `concurrency`): execution.run_attempt
    heartbeat thread    every lease/3 seconds, and at once on "cancel" signals, renews the
                        leases of the running attempts; an attempt whose renewal fails
                        (cancel requested, lease taken over) is aborted: its HTTP stream is
                        closed

Stopping (SIGTERM): no new claims; running attempts get ``grace`` seconds to finish, then are
aborted and their jobs handed back to the queue at once (not counted as a retry).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from core.registry import Registry

from .claim import LEASE_SECONDS, Lease, claim_jobs, renew, requeue_expired, worker_name
from .execution import AttemptControl, release_for_shutdown, run_attempt
from .notify import CANCEL, QUEUED, notifier_for

_logger = logging.getLogger(__name__)
_ACTIVE: dict[int, JobRunner] = {}


def active_runner(registry: Registry) -> JobRunner | None:
    """The runner working for this registry in this process, if one is running."""
    return _ACTIVE.get(id(registry))


class JobRunner:
    name = "generation-jobs"

    def __init__(self, registry: Registry, concurrency: int = 8, poll_interval: float = 2.0):
        self.registry = registry
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.worker = worker_name()
        self.notifier = notifier_for(registry)
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="llmjobs-attempt")
        self._controls: dict[int, AttemptControl] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.notifier.listen()
        _ACTIVE[id(self.registry)] = self
        for target, name in ((self._dispatch_loop, "llmjobs-dispatch"),
                             (self._heartbeat_loop, "llmjobs-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish or hand back the running attempts, then stop."""
        self._stopping.set()
        self.notifier._signal(QUEUED, "")  # wake the dispatcher and the heartbeat so they
        self.notifier._signal(CANCEL, "")  # see the stop
        deadline = time.monotonic() + timeout
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.05)
        for control in list(self._controls.values()):
            control.abort("shutdown")
        self._executor.shutdown(wait=True)
        for thread in self._threads:
            thread.join(timeout=5)
        _ACTIVE.pop(id(self.registry), None)
        self.notifier.close()

    # -- slots -------------------------------------------------------------------------------
    def _running(self) -> int:
        with self._lock:
            return len(self._controls)

    def free_slots(self) -> int:
        return 0 if self._stopping.is_set() else max(self.concurrency - self._running(), 0)

    def submit(self, lease: Lease) -> None:
        control = AttemptControl(lease)
        with self._lock:
            self._controls[lease.job_id] = control
        self._executor.submit(self._run, control)

    def _run(self, control: AttemptControl) -> None:
        try:
            run_attempt(self.registry, control.lease, control)
            if control.aborted == "shutdown":
                release_for_shutdown(self.registry, control.lease)
        except Exception:
            _logger.exception("Attempt of generation job %s crashed", control.lease.job_id)
        finally:
            with self._lock:
                self._controls.pop(control.lease.job_id, None)
            self.notifier._signal(QUEUED, "")  # a slot is free: look for more work

    # -- dispatcher --------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        maintenance_due = 0.0
        while not self._stopping.is_set():
            since = self.notifier.generation(QUEUED)
            try:
                if time.monotonic() >= maintenance_due:
                    self._maintenance()
                    maintenance_due = time.monotonic() + min(LEASE_SECONDS / 3,
                                                             self.poll_interval)
                self._claim()
            except Exception:
                _logger.exception("Claiming generation jobs failed; trying again shortly")
                self._stopping.wait(1)
            self.notifier.wait(QUEUED, "", since, self.poll_interval)

    def _maintenance(self) -> None:
        with self.registry.environment() as env:
            requeue_expired(env)
        with self.registry.environment() as env:
            env["llm.generation.queue"]._auto_retry_failed_jobs()

    def _claim(self) -> None:
        while self.free_slots():
            with self.registry.environment() as env:
                providers = env["llm.generation.queue"].search([("enabled", "=", True)]).mapped(
                    "provider_id").ids
            leases: list[Lease] = []
            for provider_id in providers:
                free = self.free_slots() - len(leases)
                if free <= 0:
                    break
                with self.registry.environment() as env:
                    leases += claim_jobs(env, provider_id, self.worker, limit=free)
            for lease in leases:
                self.submit(lease)
            if not leases:
                return

    # -- heartbeat ---------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = max(LEASE_SECONDS / 3, 0.2)
        while not self._stopping.is_set():
            since = self.notifier.generation(CANCEL)
            for control in list(self._controls.values()):
                if control.aborted:
                    continue
                try:
                    with self.registry.environment() as env:
                        alive = renew(env, control.lease)
                except Exception:
                    _logger.exception("Renewing the lease of job %s failed", control.lease.job_id)
                    continue
                if not alive:
                    control.abort("fenced")
            self.notifier.wait(CANCEL, "", since, interval)
