"""``llmjobs worker``: a foreground process running the crons of the cron file and the addons'
services until it is told to stop.

The cron file is checked before anything starts; while the database cannot be reached, the
services' start waits for it (up to ``STARTUP_PATIENCE``). The first SIGTERM or SIGINT (Ctrl-C)
stops the worker cleanly: no new ticks or work are taken, each service finishes (or hands
back) its work in flight within ``STOP_TIMEOUT`` seconds (``LLMJOBS_STOP_TIMEOUT``), and the
process exits 0. A second signal exits at once with status 1; the transactions in flight are
then rolled back by the database.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .cron import CronScheduler, load_cron_file
from .exceptions import DatabaseUnavailable
from .services import Service, load_services

if TYPE_CHECKING:
    from .registry import Registry

_logger = logging.getLogger(__name__)
T = TypeVar("T")
STOP_TIMEOUT = float(os.environ.get("LLMJOBS_STOP_TIMEOUT", "20"))
STARTUP_PATIENCE = 120.0


def run_worker(registry: Registry, cron_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT; ``cron_file`` defaults to the project's cron.yaml."""
    stop = _stop_on_signals()
    services = worker_services(registry, cron_file)
    started: list[Service] = []
    try:
        for service in services:
            when_reachable(service.start, service.name, stop)
            started.append(service)
        crons = next(s for s in services if isinstance(s, CronScheduler)).config
        _logger.warning(
            "Worker %d running (crons: %s; services: %s); stop it with Ctrl-C or SIGTERM",
            os.getpid(),
            ", ".join(e.name for e in crons.entries if e.active) or "none",
            ", ".join(s.name for s in services if not isinstance(s, CronScheduler)) or "none",
        )
        stop.wait()
        _logger.warning("Stopping the worker (signal again to stop at once)...")
    finally:
        for service in reversed(started):
            service.stop(STOP_TIMEOUT)


def worker_services(registry: Registry, cron_file: Path | None = None) -> list[Service]:
    """What a worker runs: the cron scheduler (the cron file checked first), then the
    addons' services."""
    config = load_cron_file(registry, cron_file)
    return [CronScheduler(registry, config), *load_services(registry)]


def when_reachable(action: Callable[[], T], what: str, stop: threading.Event | None = None) -> T:
    """``action()``; while the database is unavailable, wait and try again (up to
    STARTUP_PATIENCE seconds, or until ``stop`` is set): a worker started during a database
    restart waits for it rather than exiting."""
    deadline, delay = time.monotonic() + STARTUP_PATIENCE, 0.1
    while True:
        try:
            return action()
        except DatabaseUnavailable as error:
            if (stop is not None and stop.is_set()) or time.monotonic() + delay > deadline:
                raise
            _logger.warning("Cannot start %s yet: %s; waiting", what, error.reason)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _stop_on_signals() -> threading.Event:
    """An event set by the first SIGTERM/SIGINT; the second one exits the process."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            os.write(2, b"Second signal: exiting now; work in flight is rolled back.\n")
            os._exit(1)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
    return stop
