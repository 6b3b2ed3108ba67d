"""What this addon runs inside ``llmjobs worker`` (see core/services.py): the job runner.

``LLMJOBS_WORKER_CONCURRENCY`` (default 8) caps the jobs one worker process runs at once;
each queue's ``max_concurrent_jobs`` caps them across all workers. ``LLMJOBS_WORKER_QUEUES``
(provider names, comma-separated; default: every enabled queue) limits the queues it serves.
"""

from __future__ import annotations

import os

from .runner import JobRunner


def services(registry):
    concurrency = int(os.environ.get("LLMJOBS_WORKER_CONCURRENCY", "8"))
    names = [n.strip() for n in os.environ.get("LLMJOBS_WORKER_QUEUES", "").split(",")]
    return [JobRunner(registry, concurrency=concurrency, queues=[n for n in names if n] or None)]
