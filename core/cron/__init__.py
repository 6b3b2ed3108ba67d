"""Scheduled actions: declared in ``cron.yaml``, run by every ``llmjobs worker``, each tick
once cluster-wide.

- ``config``: reading and checking the cron file (errors name the entry and its line);
- ``rows``: keeping the ``ir.cron`` rows in step with it;
- ``ticks``: claiming, running and recording one tick (the delivery guarantees per backend);
- ``scheduler``: the worker's APScheduler-based service that fires the ticks;
- ``cli``: ``llmjobs worker`` and ``llmjobs cron list|run``.
"""

from .config import CronConfig, CronEntry, load_cron_file
from .rows import sync_rows
from .scheduler import CronScheduler
from .ticks import Outcome, run_due_tick, run_now

__all__ = [
    "CronConfig",
    "CronEntry",
    "CronScheduler",
    "Outcome",
    "load_cron_file",
    "run_due_tick",
    "run_now",
    "sync_rows",
]
