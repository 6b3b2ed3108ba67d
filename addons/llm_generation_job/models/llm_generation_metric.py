"""What the counters and histograms of ``/metrics`` (controllers/metrics.py) count, and the
totals that keep them from going back when old jobs are deleted.

Prometheus reads a counter or histogram that decreases as a restart of its exporter, and
miscounts the increase around it. ``/metrics`` computes its figures from the rows at scrape time
(so every API process answers the same, wherever the workers run), and ``cleanup_old_jobs``
deletes finished jobs with their attempts. So, in the cleanup's transaction and before the jobs
go, ``fold(jobs)`` adds what they contributed to the rows of ``llm.generation.metric.total``; a
scrape reports those totals plus the contributions of the rows still there (``current()``).
Both compute contributions with ``contributions()``: a job counts the same before and after its
deletion.

Each family counts only facts that no longer change once recorded, so that the contributions
of the rows still there only grow:

- ``attempts``: ended attempts, by outcome (``running`` excluded);
- ``retries``: attempts after the first (``number`` > 1), label ``count``;
- ``failures``: jobs failed for good (no automatic retry to come), by ``error_kind``: a failed
  attempt does not record its kind, and a job waiting for its retry leaves the failed state
  when retried. A job that failed for good and is retried by hand leaves this count;
- ``ttft``: time to first token of the attempts that streamed a reply (``first_token_at``);
- ``queue_wait``: ``queue_duration`` of the jobs that started and ended completed or cancelled
  (a failed job may be retried, which resets its timings);
- ``duration``: ``duration`` of the completed jobs.

Every figure is counted by the database, with ``read_group`` (one grouped query per counter,
per histogram bucket and for a histogram's count and sum): addons issue no SQL of their own
(tests/test_layout.py). Histograms are stored as cumulative counts per bucket bound (label
``bucket_label(bound)``), ``count`` and ``sum``; changing a family's bounds needs its total rows
deleted (a reset). Only the cleanup folds: jobs deleted with their thread, provider or user (the
database cascades) take their contributions with them.

The grouping by queue and the time to first token use two stored fields of the attempts:
``provider_id`` (their job's) and ``time_to_first_token``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from core import DatabaseUnavailable, api, fields, models

JOB, ATTEMPT = "llm.generation.job", "llm.generation.job.attempt"
TOTAL = "llm.generation.metric.total"
TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
WAIT_BOUNDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DURATION_BOUNDS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# How many times a scrape reads again when a cleanup committed while it read (PostgreSQL).
CONSISTENT_READ_TRIES = 5

# (family, queue, label) -> value: counts, and the sums of histograms.
Figures = dict[tuple[str, str, str], float]


@dataclass(frozen=True)
class Family:
    """The rows a family counts (``domain`` on ``model``), grouped by queue and, for a
    counter, by the field ``label``; a histogram observes the field ``value``."""

    name: str
    model: str
    domain: tuple[tuple, ...]
    label: str | None = None
    value: str | None = None
    bounds: tuple[float, ...] = ()


FAMILIES = (
    Family("attempts", ATTEMPT, (("outcome", "!=", "running"),), label="outcome"),
    Family("retries", ATTEMPT, (("number", ">", 1),)),
    Family(
        "failures",
        JOB,
        (("state", "=", "failed"), ("next_retry_at", "=", False), ("error_kind", "!=", False)),
        label="error_kind",
    ),
    Family(
        "ttft",
        ATTEMPT,
        (("time_to_first_token", "!=", False),),
        value="time_to_first_token",
        bounds=TTFT_BOUNDS,
    ),
    Family(
        "queue_wait",
        JOB,
        (("state", "in", ["completed", "cancelled"]), ("started_at", "!=", False)),
        value="queue_duration",
        bounds=WAIT_BOUNDS,
    ),
    Family(
        "duration", JOB, (("state", "=", "completed"),), value="duration", bounds=DURATION_BOUNDS
    ),
)
HISTOGRAMS = {family.name: family for family in FAMILIES if family.value}
# The field of each model that names a row's job.
JOB_REFERENCE = {JOB: "id", ATTEMPT: "job_id"}


def bucket_label(bound: float) -> str:
    """The stored label of a histogram's bucket."""
    return repr(float(bound))


class GenerationMetricTotal(models.Model):
    _name = TOTAL
    _description = "LLM generation metric total (of deleted jobs)"
    _order = "name, queue, label"
    _sql_constraints = [
        ("key_unique", "unique(name, queue, label)", "A metric total exists once per key."),
    ]

    name = fields.Char(required=True, help="The family: attempts, retries, failures, ttft...")
    queue = fields.Char(required=True, help="The provider's name")
    label = fields.Char(required=True, help="Outcome, kind, bucket bound, 'count' or 'sum'")
    value = fields.Float(help="What the deleted jobs contributed")

    @api.model
    def contributions(self, job_ids: list[int] | None = None) -> Figures:
        """What the jobs ``job_ids`` (None: every job still there) and their attempts
        contribute to each family, counted by the database."""
        env = self.sudo().env
        by_provider: dict[tuple[str, int, str], float] = defaultdict(float)
        for family in FAMILIES:
            domain = list(family.domain)
            if job_ids is not None:
                domain.append((JOB_REFERENCE[family.model], "in", job_ids))
            measure = _histogram if family.value else _counter
            for (provider_id, label), value in measure(env[family.model], family, domain):
                by_provider[(family.name, provider_id, label)] += value
        return _by_queue_name(env, by_provider)

    @api.model
    def current(self) -> Figures:
        """What the counters and histograms stand at: the totals plus the contributions of the
        rows still there. On PostgreSQL each statement sees the latest commits: a cleanup
        committing meanwhile would count its jobs twice or not at all, so the totals are read
        again at the end and everything once more when they changed (DatabaseUnavailable, a
        503, when that keeps happening)."""
        for _ in range(CONSISTENT_READ_TRIES):
            before = self._totals()
            live = self.contributions()
            if self._totals() == before:
                return _added(before, live)
        raise DatabaseUnavailable("old jobs were being deleted throughout the read")

    @api.model
    def fold(self, jobs) -> None:
        """Add what ``jobs`` contribute to the totals: in the transaction that deletes them,
        before deleting them, their rows locked (so that no other cleanup folds them too). The
        totals' rows are locked as well, so that two folds at once add up."""
        added = {key: value for key, value in self.contributions(jobs.ids).items() if value}
        if not added:
            return
        totals = self.sudo()
        rows = {(r.name, r.queue, r.label): r for r in totals.search([]).lock_for_update()}
        new = []
        for (name, queue, label), value in added.items():
            row = rows.get((name, queue, label))
            if row:
                row.write({"value": row.value + value})
            else:
                new.append({"name": name, "queue": queue, "label": label, "value": value})
        totals.create(new)

    def _totals(self) -> Figures:
        groups = self.sudo().read_group([], ["name", "queue", "label"], ["value:sum"])
        return {(g["name"], g["queue"], g["label"]): g["value:sum"] for g in groups}


def _counter(model, family: Family, domain: list) -> list[tuple[tuple[int, str], float]]:
    groupby = ["provider_id", *([family.label] if family.label else [])]
    return [
        ((group["provider_id"], group[family.label] if family.label else "count"), group["__count"])
        for group in model.read_group(domain, groupby, ["__count"])
    ]


def _histogram(model, family: Family, domain: list) -> list[tuple[tuple[int, str], float]]:
    """Cumulative bucket counts, then count and sum: one grouped query each, in that order (an
    observation recorded meanwhile can only raise the later figures)."""
    measured = []
    for bound in family.bounds:
        groups = model.read_group([*domain, (family.value, "<=", bound)], ["provider_id"])
        measured += [((g["provider_id"], bucket_label(bound)), g["__count"]) for g in groups]
    total = f"{family.value}:sum"
    for group in model.read_group(domain, ["provider_id"], ["__count", total]):
        measured.append(((group["provider_id"], "count"), group["__count"]))
        measured.append(((group["provider_id"], "sum"), group[total] or 0.0))
    return measured


def _by_queue_name(env, figures: dict[tuple[str, int, str], float]) -> Figures:
    """Figures keyed by provider id, keyed by provider name (names are unique)."""
    ids = sorted({provider_id for _, provider_id, _ in figures if provider_id})
    names = {provider.id: provider.name for provider in env["llm.provider"].browse(ids)}
    return {
        (name, names[provider_id], label): value
        for (name, provider_id, label), value in figures.items()
        if provider_id  # attempts recorded before their provider_id was stored
    }


def _added(first: Figures, second: Figures) -> Figures:
    return {key: first.get(key, 0.0) + second.get(key, 0.0) for key in first.keys() | second}
