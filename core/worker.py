"""``llmjobs worker``: a foreground process running the crons of cron.yaml and the addons'
services.

SIGTERM or Ctrl-C stops it cleanly: each service finishes or hands back its work in flight
(within ``STOP_TIMEOUT`` seconds), then the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading

from .cron import CronService
from .registry import Registry
from .services import load_services

_logger = logging.getLogger(__name__)
STOP_TIMEOUT = 20.0


def run_worker(registry: Registry) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    services = [CronService(registry), *load_services(registry)]
    for service in services:
        service.start()
        _logger.info("Started %s", service.name)
    names = ", ".join(s.name for s in services) or "nothing to run"
    _logger.warning("Worker running (%s); stop it with Ctrl-C or SIGTERM", names)
    stop.wait()
    _logger.warning("Stopping the worker...")
    for service in reversed(services):
        service.stop(STOP_TIMEOUT)
