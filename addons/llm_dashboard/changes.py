"""What wakes a live page: "jobs changed", as a stream of small events that the page answers by
fetching its own fragment again.

An event comes when a job changed (its state, its reply: the job store's progress signal,
heard from every process: NOTIFY on PostgreSQL, the commit watcher on SQLite), at most one
per ``MIN_INTERVAL``, and at least one every ``FLOOR_INTERVAL`` even when nothing did (ages,
worker beats and the time windows move on their own)::

    {"type": "changed", "n": 12, "jobs": true}     # jobs: whether a job changed

``n`` numbers the events (the event id: a page that comes back resumes the count).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from addons.llm_generation_job.signals import CHANNELS, PROGRESS
from core.notify import notifier_for

MIN_INTERVAL = 1.0
FLOOR_INTERVAL = 2.0


def job_changes(registry, after: int = 0) -> Iterator[dict[str, Any]]:
    """The events of the module docstring, forever (the consumer closes the generator)."""
    notifier = notifier_for(registry)
    notifier.listen(*CHANNELS)
    notifier.watch_commits(PROGRESS)
    number = after
    since = notifier.generation(PROGRESS)
    while True:
        changed = notifier.wait(PROGRESS, "", since, FLOOR_INTERVAL)
        since = notifier.generation(PROGRESS)  # what comes during the pause wakes the next
        number += 1
        yield {"type": "changed", "n": number, "jobs": changed}
        time.sleep(MIN_INTERVAL)
