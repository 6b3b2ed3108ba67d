"""What operators watch and fix: an overview of jobs, queues and workers, a diagnosis of what
is stuck and why, and taking back what dead workers left.

- ``overview(env)``: counts per state; per queue its health, backlog, saturation, oldest queued
  job, throughput and success rate over the last hour (5-minute buckets) and day (hours), time
  to first token and tokens per second; the last hour's LLM figures (tokens, time to first
  token, tokens per second, finish reasons); the last day's failures grouped by error;
  long-running and stalled jobs; live workers.
- ``diagnose(env)``: what ``llmjobs diagnostics`` prints: the queues' backlog, the stuck jobs
  with why each is stuck and what fixes it, failure rates per provider and model, recurring
  errors, and ``problems``: sentences, none when all is well.
- ``fix_stuck(env)``: takes back the jobs of dead workers, requeues overdue retries and fails
  provider-side jobs past their deadline, through the job store (``store.py``), the only
  writer of a job's state; says what it did, a sentence per job.

Aggregates are counted as the superuser (every user's jobs count, none is shown); the job lists
(long-running, stalled, stuck, a failure group's example) are searched as the caller, so an
ordinary user sees only their own jobs and a manager sees all. Every figure is a bounded query
on indexed columns: grouped counts over a window, lists with a limit, and the last hour's
completed attempts up to ``SAMPLE_LIMIT`` (the most recent), so the overview stays fast however
many finished jobs the database keeps. Datetimes are aware, in UTC; ``now`` (tests) moves the
windows' end, while leases and workers' liveness are judged at the real time.
"""

from ..models.llm_generation_job import MANAGER_GROUP
from .common import ERROR_LENGTH, normalize_error
from .diagnosis import diagnose, fix_stuck
from .overview import DAY_BUCKET, HOUR_BUCKET, overview

__all__ = [
    "DAY_BUCKET",
    "ERROR_LENGTH",
    "HOUR_BUCKET",
    "MANAGER_GROUP",
    "diagnose",
    "fix_stuck",
    "normalize_error",
    "overview",
]
