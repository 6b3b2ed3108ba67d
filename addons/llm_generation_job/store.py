"""The job store: the one place that changes a generation job's state, lease and outcome.

Every claim, lease renewal, requeue, hand-back, completion, failure, cancellation and retry of
an ``llm.generation.job`` goes through ``JobStore``. Nothing else names the lease fields or
writes the fields of ``STORE_FIELDS`` (the model refuses them in ``create`` and ``write``).
What it guarantees, whoever calls and however many at once:

- **One owner per attempt.** A claim gives each job a *lease*: a random token and an expiry
  that its worker renews. Every write made for an attempt (the reply's start, its progress,
  completion, failure, cancellation, hand-back) is a compare-and-set on the job's id, that
  token and the state ``running`` (``write_where``). A caller whose write changed nothing has
  lost the job: it writes nothing more and its caller rolls back, so a job gets one reply and
  its outcome is applied once. Jobs claimed together share one token; a lease is the pair
  (job id, token), and every condition names both.
- **Limits.** A claim locks the provider's queue row, so "count the running jobs, start more"
  is atomic across workers and machines: ``max_concurrent_jobs`` holds.
- **Order.** Claims take the highest priority first, then the oldest ``queued_at``. A job
  taken back from a dead worker (``requeue_expired``) or handed back by a live one
  (``release``) keeps its ``queued_at``, so it keeps its place in line; a retry after a
  failure is queued anew.
- **Recovery.** A lease that expired (its worker died, froze or lost the database) is taken
  back: the attempt is recorded as lost and the job requeued as a new attempt (counted as a
  retry), or failed when it has none left. A job whose worker is no longer live (its beats
  stopped) can be taken back the same way before its lease expires (``take_back_orphans``):
  the old owner's every write is fenced by the lease, so it writes nothing more. A hand-back
  (the worker stops, or cannot go on) is requeued at once and not counted.
- **The stream log.** A reply is logged as it streams (``append``: a row per flushed piece,
  numbered per job, fenced like every other write: the job rows are locked first); the
  message body is written once, at the end, from the same pieces, so it equals the log. A new
  attempt after one that logged anything begins with a ``restart`` row, except one that
  re-attaches to its job's background response (``attach_responses`` recorded it; each piece
  keeps the response's cursor): that one goes on where the log stopped. A retry after a
  failure generates anew. ``forget_logs`` drops the logs of jobs finished long ago (their
  message holds the text).
- **Provider-side jobs.** A status check locks the job's row while it asks the provider and
  applies the answer, so two checkers at once (a user's loop and the status cron) never both
  apply it: the second waits, then finds the job finished.
- **Spend.** Every attempt's end writes its row of the usage ledger (``llm.generation.usage``)
  in the same transaction: the tokens its provider reported, or an estimate marked so (the
  prompt and the text it streamed, when something streamed), and their cost by the model's
  prices. Spend and job state never disagree.
- **Provider batches.** ``open_batch`` takes queued batch jobs into a new batch row
  ("submitting", claimed by a token until ``submit_expires_at``) and commits before anything
  is sent; ``batch_submitted`` records the provider's id under that claim, or fails when the
  claim was taken over (``take_over_submission``: the submitter died or froze). Results are
  applied by ``apply_batch`` with the batch row locked and only while it is still running:
  however many pollers race, one applies them and the others find it ended. Each job's
  result is a compare-and-set on (job, batch, running), so a job cancelled meanwhile keeps
  its cancellation. Batch jobs hold no lease and no worker slot.

Methods work in the caller's transaction, which the caller commits or rolls back, in superuser
mode: the model's ``action_*`` methods check the user's rights before they call the store.
Wake-ups (``signals``) are sent with the transaction and delivered when it commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from addons.llm_thread.wire.batch import ERRORED, EXPIRED, SUCCEEDED, BatchResult, BatchState
from addons.llm_thread.wire.events import Finish, Usage
from core import UserError
from core.notify import notifier_for

from . import admission, backoff
from .signals import CANCEL, PROGRESS, QUEUED

_logger = logging.getLogger(__name__)

LEASE_SECONDS = float(os.environ.get("LLMJOBS_JOB_LEASE_SECONDS", "30"))
JOB, ATTEMPT, QUEUE = "llm.generation.job", "llm.generation.job.attempt", "llm.generation.queue"
CHUNK, WORKER, BATCH = "llm.generation.job.chunk", "llm.generation.worker", "llm.generation.batch"
USAGE, BUDGET = "llm.generation.usage", "llm.budget"
HOLD_BACKS = 5  # a job held back for the provider's rate limit this often fails
PROCESSED_EVERY = dt.timedelta(seconds=1)  # a queue's last_processed_at, to within this
BATCH_SUBMIT_SECONDS = 300.0  # a submission not recorded by then is taken over
# A batch still running this long after its submission (the providers' window is 24 hours)
# will not end: its polls fail, or the provider lost it. Its jobs fail, to be retried.
BATCH_OVERDUE = dt.timedelta(hours=25)
ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("completed", "failed", "cancelled")
CLAIM_ORDER = "priority desc, queued_at, id"
# The fields only the store writes: the state machine, the lease, timings, counters, outcome.
STORE_FIELDS = frozenset(
    {
        "state",
        "queued_at",
        "started_at",
        "completed_at",
        "retry_count",
        "next_retry_at",
        "error_message",
        "error_kind",
        "external_job_id",
        "batch_id",
        "waiting_reason",
        "eligible_at",
        "reserved_cost",
        "provider_data",
        "output_message_id",
        "attempt_ids",
        "chunk_ids",
        "lease_token",
        "lease_expires_at",
        "cancel_requested",
    }
)
# A job waiting for its automatic retry: it still belongs to its thread.
RETRY_PENDING = [
    ("state", "=", "failed"),
    ("error_kind", "=", "retryable"),
    ("next_retry_at", "!=", False),
]
# Jobs that keep their thread busy: queued, running, or failed with a retry to come.
BUSY = ["|", ("state", "in", list(ACTIVE_STATES)), "&", "&", *RETRY_PENDING]
_CLEARED_LEASE = {"lease_token": False, "lease_expires_at": False}
_PAST = {
    "queue": "queued",
    "start": "started",
    "cancel": "cancelled",
    "complete": "completed",
    "fail": "failed",
    "retry": "retried",
}
LOST = "The worker stopped renewing its lease (it died, froze or lost the database)."


@dataclass(frozen=True)
class Lease:
    """The right of one worker to run one attempt of a job."""

    job_id: int
    token: str
    attempt_id: int
    started_at: dt.datetime  # the attempt's


@dataclass(frozen=True)
class Orphan:
    """A running job that no live worker holds (``JobStore.orphans``): its lease expired
    (``expired``), or its worker is no longer live (``last_beat_at``: that worker's last beat)
    though the lease runs until ``expires_at``."""

    job_id: int
    worker: str | None  # host:pid of its running attempt
    expires_at: dt.datetime
    expired: bool
    last_beat_at: dt.datetime | None = None


@dataclass(frozen=True)
class Piece:
    """A piece of a reply for the stream log: the ``seq``-th row of its job."""

    lease: Lease
    seq: int
    attempt: int
    text: str
    first: bool = False  # the attempt's first piece: its time to first token ends here
    cursor: int | None = None  # a background response's: its events up to here are in it


@dataclass(frozen=True)
class Completion:
    """A stream that completed: its lease, its reply message's values, the pieces of its
    log not saved yet, and what its provider said of its usage and remaining requests."""

    lease: Lease
    message_values: dict[str, Any]
    tail: Sequence[Piece] = ()
    usage: Usage | None = None
    remaining: int | None = None


@dataclass(frozen=True)
class ReplyStart:
    """An attempt's start: its job and reply message (in the store's environment), the last
    ``seq`` of the stream log (the attempt's pieces follow it) and the attempt's number. An
    attempt that re-attaches to its job's background response has ``resume``: the response
    and the cursor after which its events are not logged yet, and ``text``, the reply so
    far."""

    job: Any
    message: Any
    seq: int
    attempt: int
    resume: tuple[str, int] | None = None
    text: str = ""


@dataclass(frozen=True)
class BatchOpening:
    """A batch opened for submission (``JobStore.open_batch``): the submitter's claim on it
    (``token``), the key that tags it at the provider, and its request lines (one per job)."""

    batch_id: int
    token: str
    key: str
    lines: list[bytes]


@dataclass(frozen=True)
class Spent:
    """The tokens one attempt used, as its provider reported them, or ``estimated``."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    estimated: bool = False

    @classmethod
    def reported(cls, usage: Usage | None) -> Spent | None:
        """What a provider's usage report says; None when it said nothing."""
        if usage is None or (usage.prompt_tokens is None and usage.completion_tokens is None):
            return None
        return cls(usage.prompt_tokens or 0, usage.completion_tokens or 0, usage.cached_tokens or 0)


NOTHING = Spent()  # nothing generated, nothing billed


def reply_values(text: str, usage: Usage | None, finish: Finish | None) -> dict[str, Any]:
    """A finished reply's message values: its text, and the usage and finish the provider
    reported."""
    values: dict[str, Any] = {"body": text, "state": "done"}
    if usage is not None:
        values.update(
            prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0
        )
    if finish is not None:
        values.update(
            finish_reason=finish.reason or False, provider_metadata=finish.metadata or False
        )
    return values


def custom_id(job_id: int) -> str:
    """The ``custom_id`` of a job's request in a provider batch."""
    return f"job-{job_id}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _attempts(count: int) -> str:
    return f"{count} attempt{'s' if count != 1 else ''}"


def _expiry(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=LEASE_SECONDS)


def _batch_values(state: BatchState, now: dt.datetime) -> dict[str, Any]:
    """What a batch row records of the provider's description of it."""
    return {
        "external_id": state.id,
        "provider_status": state.status,
        "request_counts": state.counts,
        "provider_data": state.data,
        "last_polled_at": now,
    }


class JobStore:
    """The job store on ``env``'s transaction (see the module docstring)."""

    def __init__(self, env):
        self.env = env(su=True)
        self.jobs = self.env[JOB]
        self.notifier = notifier_for(env.registry)
        self._claimed: set[Lease] = set()  # by this store, in its transaction
        # The queues found in this transaction, by provider (by every store of it).
        self._queues: dict[int, Any] = env.cr.memo.setdefault(QUEUE, {})

    def queue(self, provider_id: int, lock: bool = False):
        """The provider's queue (created on first use), its fields read by the statement that
        finds it; looked for once a transaction. With ``lock``, its row is locked until the
        transaction ends, and its fields read by the statement that locks it."""
        queue = self._queues.get(provider_id)
        if queue is not None:
            return queue.lock_for_update(read=True) if lock else queue
        queue = self.env[QUEUE]._find_queue(provider_id, lock=lock)
        if not queue:  # not kept: a unit that fails takes the new queue back
            return self.env[QUEUE].create({"provider_id": provider_id})
        self._queues[provider_id] = queue
        return queue

    # -- fences --------------------------------------------------------------------------------
    @staticmethod
    def _held(lease: Lease, *, cancelled_ok: bool = False) -> list:
        """The condition under which ``lease`` still owns its job."""
        domain = [("lease_token", "=", lease.token), ("state", "=", "running")]
        if not cancelled_ok:
            domain.append(("cancel_requested", "=", False))
        return domain

    def _hold(self, lease: Lease, *, cancelled_ok: bool = False):
        """Renew ``lease`` if it still owns its job; the job (its row now locked by the
        write until the transaction ends), or an empty recordset when the lease was lost."""
        job = self.jobs.browse(lease.job_id)
        return job.write_where(
            self._held(lease, cancelled_ok=cancelled_ok), {"lease_expires_at": _expiry(_now())}
        )

    @staticmethod
    def _leases_domain(leases: Sequence[Lease]) -> list:
        """Jobs still held by any of ``leases``: per shared token, the ids claimed with it."""
        by_token: dict[str, list[int]] = {}
        for lease in leases:
            by_token.setdefault(lease.token, []).append(lease.job_id)
        terms = [
            ["&", ("lease_token", "=", token), ("id", "in", ids)] for token, ids in by_token.items()
        ]
        return ["|"] * (len(terms) - 1) + [token for term in terms for token in term]

    def _signal(self, channel: str, payloads: Iterable[int]) -> None:
        self.notifier.send_many(self.env.cr, channel, list(payloads))

    # -- queueing ------------------------------------------------------------------------------
    def enqueue(self, job) -> None:
        """draft -> queued: a worker picks it up at once."""
        job = self.jobs.browse(job.id)
        self.queue(job.provider_id.id)
        self._check_budgets(job)
        queued = job.write_where(
            [("state", "=", "draft")],
            {"state": "queued", "queued_at": _now(), "next_retry_at": False},
        )
        if not queued:
            raise self._refusal(job, "queue", ("draft",))
        self._signal(QUEUED, [job.provider_id.id])
        self._signal(PROGRESS, [job.id])

    def _check_budgets(self, job) -> None:
        """Refuse ``job`` (a UserError naming the budget, its period and when it resets) when
        its expected cost would take a budget past its hard limit; warn, once a period, when
        past a soft threshold."""
        if not self.env[BUDGET].search_count([("active", "=", True)]):
            return
        now = _now()
        book = admission.BudgetBook(self.env, now)
        cost = admission.estimate_cost(job)
        refusal = book.refusal(job, cost)
        if refusal:
            raise UserError(f"{refusal[0]} Nothing was queued.")
        for budget in book.soft_passed(job, cost):
            if budget.soft_warned_at and budget.soft_warned_at >= budget._period_start(now):
                continue
            _logger.warning(
                "The %s passed its soft threshold of $%.4f", budget._describe(), budget.soft_limit
            )
            budget.write({"soft_warned_at": now})

    def claim(
        self,
        provider_id: int,
        worker: str,
        limit: int | None = None,
        job_ids: Sequence[int] | None = None,
    ) -> list[Lease]:
        """Start as many queued jobs of the provider as its queue allows (at most ``limit``;
        among ``job_ids`` when given): each gets a lease and a new attempt row."""
        queue = self.queue(provider_id, lock=True)
        if not queue or not queue.enabled:
            return []
        concurrency, running = queue._concurrency(), self._running(provider_id)
        free = concurrency - running
        if limit is not None:
            free = min(free, limit)
        if free <= 0:
            return []
        now = _now()
        gate = admission.gate(self.env, queue, now)
        if (queue.waiting_reason or False) != (gate.reason or False):
            queue.write(
                {"waiting_reason": gate.reason or False, "eligible_at": gate.until or False}
            )
        if gate.slots is not None:
            free = min(free, gate.slots)
        if free <= 0:
            return []
        domain = [
            ("provider_id", "=", provider_id),
            ("state", "=", "queued"),
            ("execution_mode", "!=", "batch"),
            "|",
            ("eligible_at", "=", False),
            ("eligible_at", "<=", now),
        ]
        if job_ids is not None:
            domain.append(("id", "in", list(job_ids)))
        candidates = admission.candidates(self.env, queue, domain, free, CLAIM_ORDER)
        admitted = admission.admit(self.env, queue, candidates, gate, now)
        if admitted.blocked and not admitted.jobs:
            queue.write({"waiting_reason": admitted.blocked, "eligible_at": now + admission.SOON})
        for job, reason, until in admitted.waiting:
            job.write_where(
                [("state", "=", "queued")],
                {"waiting_reason": reason, "eligible_at": min(until, now + admission.WINDOW)},
            )
        token = secrets.token_hex(16)
        claimed = self.jobs.browse([job.id for job in admitted.jobs]).write_where(
            [("state", "=", "queued")],
            {
                "state": "running",
                "started_at": now,
                "completed_at": False,
                "lease_token": token,
                "lease_expires_at": _expiry(now),
                "cancel_requested": False,
                "waiting_reason": False,
                "eligible_at": False,
            },
        )
        if not claimed:
            return []
        for job in claimed.filtered(lambda job: job.id in admitted.reserved):
            job.write_where(
                [("state", "=", "running")], {"reserved_cost": admitted.reserved[job.id]}
            )
        if gate.probe:
            queue.write(gate.opened)
        counts = {
            group["job_id"]: group["__count"]
            for group in self.env[ATTEMPT].read_group(
                [("job_id", "in", claimed.ids)], ["job_id"], ["__count"]
            )
        }
        attempts = self.env[ATTEMPT].create(
            [
                {
                    "job_id": job.id,
                    "number": counts.get(job.id, 0) + 1,
                    "worker": worker,
                    "started_at": now,
                    "estimated_tokens": admitted.tokens.get(job.id, 0),
                    "started_full": running + len(claimed) >= concurrency,
                }
                for job in claimed
            ]
        )
        if not queue.last_processed_at or now - queue.last_processed_at >= PROCESSED_EVERY:
            queue.write({"last_processed_at": now})
        self._signal(PROGRESS, claimed.ids)
        leases = [
            Lease(job.id, token, attempt.id, now)
            for job, attempt in zip(claimed, attempts, strict=True)
        ]
        self._claimed.update(leases)
        return leases

    # -- attempts ------------------------------------------------------------------------------
    def renew(self, leases: Sequence[Lease]) -> list[Lease]:
        """Extend the leases that still own their jobs, in one statement; returns them (a
        lease left out was lost, or its job's cancellation was requested)."""
        if not leases:
            return []
        jobs = self.jobs.browse(sorted({lease.job_id for lease in leases}))
        renewed = jobs.write_where(
            [
                *self._leases_domain(leases),
                ("state", "=", "running"),
                ("cancel_requested", "=", False),
            ],
            {"lease_expires_at": _expiry(_now())},
        )
        held = set(renewed.ids)
        return [lease for lease in leases if lease.job_id in held]

    def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` still owns its job (renewing it)."""
        return bool(self._hold(lease))

    def start_reply(self, lease: Lease) -> ReplyStart | None:
        """The attempt's start: its reply message, created on the first attempt and reset
        (empty, "streaming") by later ones, whose start a ``restart`` row in the stream log
        records when an earlier attempt logged anything; None when the lease was lost
        (nothing is written then). A lease claimed in this transaction holds: its job's row
        is locked since."""
        return self.start_replies([lease])[0]

    def start_replies(self, leases: Sequence[Lease]) -> list[ReplyStart | None]:
        """``start_reply`` for many attempts: the new replies in one INSERT, linked to their
        jobs in one UPDATE."""
        held = [lease for lease in leases if lease in self._claimed or self._hold(lease)]
        jobs = self.jobs.browse([lease.job_id for lease in held])
        attempts = self.env[ATTEMPT].browse([lease.attempt_id for lease in held])
        attempts.mapped("number")  # their numbers, in one query (_started reads them)
        again = jobs.filtered("output_message_id")
        again.mapped("output_message_id").write({"body": "", "state": "streaming", "error": False})
        first = jobs - again
        if first:
            replies = self.env["llm.message"].create(
                [
                    {
                        "thread_id": job.thread_id.id,
                        "body": "",
                        "llm_role": "assistant",
                        "state": "streaming",
                    }
                    for job in first
                ]
            )
            first.write_each([{"output_message_id": reply.id} for reply in replies])
        self._signal(PROGRESS, jobs.ids)
        started = {lease: self._started(lease) for lease in held}
        return [started.get(lease) for lease in leases]

    def _started(self, lease: Lease) -> ReplyStart:
        """Where the stream of an attempt whose reply is ready begins (see start_reply)."""
        job = self.jobs.browse(lease.job_id)
        reply = job.output_message_id
        attempt = self.env[ATTEMPT].browse(lease.attempt_id).number
        response = (job.provider_data or {}).get("response_id")
        if attempt > 1 and job.execution_mode == "background" and response:
            return self._resumed(job, reply, attempt, response)
        last = self.env[CHUNK]  # only an earlier attempt can have logged anything
        if attempt > 1:
            last = last.search([("job_id", "=", job.id)], order="seq desc", limit=1)
        seq = last.seq
        if last:
            seq += 1
            values = {"job_id": job.id, "seq": seq, "kind": "restart", "attempt": attempt}
            self.env[CHUNK].create(values)
        return ReplyStart(job, reply, seq, attempt)

    def _resumed(self, job, reply, attempt: int, response: str) -> ReplyStart:
        """The start of an attempt that re-attaches to the background response an earlier
        attempt of the same reply left (its worker died or stopped): no restart, the reply so
        far is what the log holds since its last restart, and it goes on after the last
        cursor logged."""
        chunks = self.env[CHUNK].search([("job_id", "=", job.id)], order="seq")
        restarts = [index for index, chunk in enumerate(chunks) if chunk.kind == "restart"]
        current = chunks[restarts[-1] + 1 :] if restarts else chunks
        cursor = (job.provider_data or {}).get("response_cursor") or 0
        for chunk in current:
            cursor = chunk.cursor or cursor  # a text delta's is never 0 (creation's is)
        text = "".join(chunk.content or "" for chunk in current)
        seq = chunks[-1].seq if chunks else 0
        return ReplyStart(job, reply, seq, attempt, (response, cursor), text)

    def attach_responses(self, responses: Sequence[tuple[Lease, str, int]]) -> None:
        """Record the background response each attempt's reply is generated by (``(lease,
        response id, cursor of its creation)``), where the lease still holds: an attempt
        that takes over the job re-attaches to it rather than generating the reply again."""
        for lease, response_id, cursor in responses:
            job = self.jobs.browse(lease.job_id)
            data = {**(job.provider_data or {}), "response_id": response_id}
            data["response_cursor"] = cursor
            job.write_where(self._held(lease, cancelled_ok=True), {"provider_data": data})

    def append(self, pieces: Sequence[Piece], *, completed: bool = False) -> list[Lease]:
        """Log ``pieces`` of the streams whose leases still hold: their job rows are locked
        (one statement, no row rewritten: leases are renewed by ``renew``, at each beat), so
        nobody takes a lease over until the transaction ends; then one INSERT. Returns the
        leases that no longer hold (lost, or a cancellation requested: their streams must
        stop, their pieces are dropped). ``completed``: the pieces of streams that completed,
        logged even when a cancellation was requested meanwhile (a completion wins)."""
        leases = list(dict.fromkeys(piece.lease for piece in pieces))
        if not leases:
            return []
        jobs = self.jobs.browse(sorted({lease.job_id for lease in leases}))
        holding = [*self._leases_domain(leases), ("state", "=", "running")]
        if not completed:
            holding.append(("cancel_requested", "=", False))
        held_ids = set(jobs.lock_for_update(domain=holding).ids)
        held = {lease for lease in leases if lease.job_id in held_ids}
        self._log([piece for piece in pieces if piece.lease in held])
        return [lease for lease in leases if lease not in held]

    def _log(self, pieces: Sequence[Piece], stamp_firsts: bool = True) -> None:
        """Insert ``pieces``; an attempt's first piece stamps its ``first_token_at`` (unless
        the caller stamps it with the attempt's end: ``stamp_firsts`` False)."""
        if not pieces:
            return
        self.env[CHUNK].create(
            [
                {
                    "job_id": p.lease.job_id,
                    "seq": p.seq,
                    "attempt": p.attempt,
                    "content": p.text,
                    "cursor": p.cursor or False,
                }
                for p in pieces
            ]
        )
        firsts = {p.lease.attempt_id: p.lease.started_at for p in pieces if p.first}
        if firsts and stamp_firsts:
            now, attempts = _now(), self.env[ATTEMPT].browse(list(firsts))
            attempts.write_each(
                [
                    {
                        "first_token_at": now,
                        "time_to_first_token": attempts._seconds_to_first_token(started, now),
                    }
                    for started in firsts.values()
                ]
            )
        self._signal(PROGRESS, [p.lease.job_id for p in pieces])

    def forget_logs(self, finished_before: dt.datetime, limit: int) -> int:
        """Delete the stream logs of up to ``limit`` jobs that finished before
        ``finished_before`` (not a failed one with a retry to come); returns how many jobs'
        logs went. A finished job's reply is its message's body."""
        finished = self.jobs.search(
            [
                ("completed_at", "<", finished_before),
                ("state", "in", list(FINISHED_STATES)),
                ("next_retry_at", "=", False),
                ("chunk_ids", "!=", False),
            ],
            limit=limit,
            order="id",
        )
        if finished:
            self.env[CHUNK].search([("job_id", "in", finished.ids)]).unlink()
        return len(finished)

    def logged_through(self, job_ids: Sequence[int]) -> dict[int, int]:
        """The highest ``seq`` logged per job (after a commit whose outcome is unknown, the
        writer drops what is already there)."""
        groups = self.env[CHUNK].read_group(
            [("job_id", "in", list(job_ids))], ["job_id"], ["seq:max"]
        )
        return {group["job_id"]: group["seq:max"] for group in groups}

    def complete(
        self,
        lease: Lease,
        message_values: dict[str, Any],
        tail: Sequence[Piece] = (),
        usage: Usage | None = None,
        remaining: int | None = None,
    ) -> bool:
        """The job completed: job, reply and attempt, or nothing (False: the lease was lost).
        A completion wins over a cancellation requested meanwhile: there is nothing left to
        stop."""
        return bool(self.complete_many([Completion(lease, message_values, tail, usage, remaining)]))

    def complete_many(self, completions: Sequence[Completion]) -> set[Lease]:
        """``complete`` for many jobs, in a few statements whatever their number; returns the
        leases whose jobs completed (the others were lost: nothing is written for them)."""
        if not completions:
            return set()
        leases = [completion.lease for completion in completions]
        now = _now()
        done = self.jobs.browse([lease.job_id for lease in leases]).write_where(
            [*self._leases_domain(leases), ("state", "=", "running")],
            {
                "state": "completed",
                "completed_at": now,
                **_CLEARED_LEASE,
                "error_message": False,
                "error_kind": False,
                "next_retry_at": False,
            },
        )
        held = set(done.ids)
        completed = [
            (c, done.browse(c.lease.job_id)) for c in completions if c.lease.job_id in held
        ]
        by_fields: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
        for completion, job in completed:
            values = completion.message_values
            if job.output_message_id:
                reply = (job.output_message_id.id, values)
                by_fields.setdefault(tuple(sorted(values)), []).append(reply)
        for group in by_fields.values():
            messages = self.env["llm.message"].browse([message_id for message_id, _ in group])
            messages.write_each([values for _, values in group])
        tails = [piece for completion, _ in completed for piece in completion.tail]
        self._log(tails, stamp_firsts=False)
        ends = []
        for completion, job in completed:
            body = completion.message_values.get("body") or ""
            spent = Spent.reported(completion.usage) or self._estimate(job, body)
            ends.append((job, self.env[ATTEMPT].browse(completion.lease.attempt_id), spent))
        firsts = {piece.lease.attempt_id for piece in tails if piece.first}
        self._end_attempts(ends, "completed", now, first_tokens=firsts)
        for (completion, job), (_, attempt, _) in zip(completed, ends, strict=True):
            self._provider_answered(job, attempt, ok=True, remaining=completion.remaining)
        self._signal(PROGRESS, held)
        return {completion.lease for completion, _ in completed}

    def fail(
        self,
        lease: Lease,
        error: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        text: str | None = None,
        tail: Sequence[Piece] = (),
    ) -> bool:
        """The attempt failed: a retry is scheduled when the error is retryable and retries
        are left, else the job fails for good; a requested cancellation wins. ``text``: the
        partial reply, kept and marked with the error (``tail``: its pieces not logged yet).
        False when the lease was lost."""
        job = self._hold(lease, cancelled_ok=True)
        if not job:
            return False
        if job.cancel_requested:
            return self.finish_cancelled(lease, text, tail)
        if text is not None and job.output_message_id:
            job.output_message_id.write({"body": text})
        self._log(tail)
        self._fail(
            job,
            self._held(lease, cancelled_ok=True),
            error,
            retryable=retryable,
            retry_after=retry_after,
            attempt_id=lease.attempt_id,
        )
        if retryable:
            self._provider_answered(job, ok=False, error=error, retry_after=retry_after)
        return True

    def hold_back(self, lease: Lease, error: str, retry_after: float | None) -> bool:
        """The provider refused the attempt for its rate limit (a 429): back-pressure, not a
        failure. The job goes back to its place in line (not counted as a retry), every
        worker holds its jobs back for ``retry_after`` seconds, an adaptive queue halves its
        concurrency, and the refusal counts towards a cooldown. A job held back HOLD_BACKS
        times fails instead (retryably: its retries and their backoff decide), so that a
        request the provider will never take does not wait for ever. False when the lease
        was lost."""
        job = self.jobs.browse(lease.job_id)
        self.throttle(job.provider_id.id, retry_after or 1.0, halve=True)
        held = self.env[ATTEMPT].search_count(
            [("job_id", "=", job.id), ("outcome", "=", "interrupted")]
        )
        if held >= HOLD_BACKS:  # fail() counts the refusal towards a cooldown
            return self.fail(lease, error, retryable=True, retry_after=retry_after)
        self._provider_answered(job, ok=False, error=error, retry_after=retry_after)
        return self.release(lease, f"{_sentence(error)} Queued again, in its place in line.")

    def _running(self, provider_id: int) -> int:
        """How many of the provider's jobs run in workers now (not those in provider batches)."""
        return self.jobs.search_count(
            [("provider_id", "=", provider_id), ("state", "=", "running"), ("batch_id", "=", False)]
        )

    def _provider_answered(
        self,
        job,
        attempt=None,
        *,
        ok: bool,
        error: str = "",
        retry_after: float | None = None,
        remaining: int | None = None,
    ) -> None:
        """Keep the queue's circuit breaker and adaptive concurrency (admission.py) after an
        attempt that the provider answered (``ok``) or failed retryably: a success closes the
        breaker and, on an adaptive queue, counts towards one more slot when its
        ``attempt`` started as the queue ran all the jobs it allows (``started_full``), unless
        the provider said it has no more than that many requests left (``remaining``); a
        failure counts towards a cooldown, and a probe's failure cools the provider down
        again.

        A success that started while fewer jobs ran than the queue allows says nothing of
        whether the provider would take more (its workers have fewer slots than that, or
        these are the queue's last few jobs): counting it would raise the concurrency far
        past what the provider was shown to take, to be found by a burst of 429s once more
        jobs come. TCP, too, keeps its window while the sender is application-limited (RFC
        7661)."""
        queue = self.queue(job.provider_id.id)
        now, values = _now(), {}
        if ok:
            if queue.consecutive_failures:
                values["consecutive_failures"] = 0
            if queue.breaker_state != "closed":  # the queue's jobs may start again, at once
                values.update(breaker_state="closed", breaker_reason=False, breaker_until=False)
                values.update(waiting_reason=False, eligible_at=False)
                self._signal(QUEUED, [job.provider_id.id])
            if queue.adaptive_concurrency and attempt and attempt.started_full:
                current = queue._concurrency()
                successes = queue.adaptive_successes + 1
                room = remaining is None or remaining > current
                if successes >= current and current < queue.max_concurrent_jobs and room:
                    values.update(current_concurrency=current + 1, adaptive_successes=0)
                else:
                    values["adaptive_successes"] = successes
        else:
            failures = queue.consecutive_failures + 1
            values["consecutive_failures"] = failures
            half_open = queue.breaker_state == "half_open"
            tripped = queue.breaker_state == "closed" and failures >= queue.breaker_threshold
            if queue.breaker_threshold and (half_open or tripped):
                cooldown = max(queue.breaker_cooldown_seconds or 30.0, retry_after or 0.0)
                until, reason = now + dt.timedelta(seconds=cooldown), _sentence(error)[:500]
                values.update(
                    breaker_state="open",
                    breaker_reason=reason,
                    breaker_since=now,
                    breaker_until=until,
                    waiting_reason=admission.cooled_down(now, failures, reason, until),
                    eligible_at=until,  # no worker looks before
                )
                _logger.warning(
                    "Provider %s cooled down for %g s after %d failures in a row: %s",
                    job.provider_id.name,
                    cooldown,
                    failures,
                    error,
                )
        if values:
            queue.write(values)

    def throttle(self, provider_id: int, seconds: float, *, halve: bool = False) -> None:
        """The provider asked to wait ``seconds`` (a 429's Retry-After, or no requests left
        until its limit resets): no worker starts its jobs until then; an adaptive queue
        halves its concurrency when ``halve``."""
        queue = self.queue(provider_id)
        until, values = _now() + dt.timedelta(seconds=max(seconds, 0.0)), {}
        if not queue.throttled_until or queue.throttled_until < until:
            values["throttled_until"] = until
        if not queue.eligible_at or queue.eligible_at < until:
            values["eligible_at"] = until  # no worker looks before
            values["waiting_reason"] = admission.throttled(until)
        if halve and queue.adaptive_concurrency:
            lowest = max(queue.min_concurrency, 1)
            values.update(current_concurrency=max(lowest, queue._concurrency() // 2))
            values["adaptive_successes"] = 0
        if values:
            queue.write(values)

    def finish_cancelled(
        self, lease: Lease, text: str | None = None, tail: Sequence[Piece] = ()
    ) -> bool:
        """The attempt stopped for a requested cancellation: the job cancelled, its partial
        reply kept, marked cancelled. False when the lease was lost or no cancel requested."""
        job = self.jobs.browse(lease.job_id)
        condition = [*self._held(lease, cancelled_ok=True), ("cancel_requested", "=", True)]
        if not self._close(
            job,
            condition,
            "cancelled",
            error="Cancelled while running.",
            attempt_id=lease.attempt_id,
            spent=self._estimate(job, text) if text is not None else None,
        ):
            return False
        if text is not None and job.output_message_id:
            job.output_message_id.write({"body": text})
        self._log(tail)
        return True

    def release(self, lease: Lease, reason: str) -> bool:
        """Hand the job back to its queue at once (the worker stops, or cannot go on): it
        keeps its place in line and the attempt does not count as a retry. A requested
        cancellation is honoured instead. False when the lease was lost."""
        job = self._hold(lease, cancelled_ok=True)
        if not job:
            return False
        if job.cancel_requested:
            return self.finish_cancelled(lease)
        job.write_where(
            self._held(lease, cancelled_ok=True),
            {"state": "queued", "started_at": False, **_CLEARED_LEASE},
        )
        self._close_attempts(job, "interrupted", _now(), error=reason, attempt_id=lease.attempt_id)
        self._signal(QUEUED, [job.provider_id.id])
        self._signal(PROGRESS, [job.id])
        return True

    def submit_external(self, lease: Lease, external_id: str) -> bool:
        """The provider runs the job now (its own job API): record its id and release the
        lease; the status checks follow the job from here. False when the lease was lost."""
        job = self._hold(lease, cancelled_ok=True)
        if not job:
            return False
        job.write_where(
            self._held(lease, cancelled_ok=True), {"external_job_id": external_id, **_CLEARED_LEASE}
        )
        if job.cancel_requested:  # asked while the job was being submitted
            self._cancel_external(job)
        self._signal(PROGRESS, [job.id])
        return True

    # -- recovery ------------------------------------------------------------------------------
    def requeue_expired(self) -> int:
        """Take back the running jobs whose lease expired: requeue each as a new attempt in
        its old place in line, or fail it when out of retries (cancel it when that was
        asked). Returns how many were taken back."""
        now = _now()
        expired = self.jobs.search(
            [
                ("state", "=", "running"),
                ("lease_token", "!=", False),
                ("lease_expires_at", "<", now),
            ]
        )
        taken = 0
        for job in expired.lock_for_update(skip_locked=True):
            if job.state != "running" or not job.lease_token or job.lease_expires_at >= now:
                continue  # renewed or finished since the search
            if self._take_back(job, now, LOST):
                taken += 1
        return taken

    def orphans(self, now: dt.datetime | None = None) -> list[Orphan]:
        """The running jobs that no live worker holds: their lease expired, or the worker of
        their running attempt is no longer live (it died or froze; its lease has not expired
        yet). A worker is known by its row (``llm.generation.worker``): an attempt whose
        worker has none (a script's ``action_start``) is not presumed dead."""
        return self._orphans(
            self.jobs.search(
                [("state", "=", "running"), ("lease_token", "!=", False)], order="started_at, id"
            ),
            now or _now(),
        )

    def _orphans(self, jobs, now: dt.datetime) -> list[Orphan]:
        """The orphans among ``jobs`` (running, each holding a lease)."""
        attempts = self.env[ATTEMPT].search(
            [("job_id", "in", jobs.ids), ("outcome", "=", "running")]
        )
        worker_of = {attempt.job_id.id: attempt.worker or None for attempt in attempts}
        names = sorted({name for name in worker_of.values() if name})
        rows = self.env[WORKER].search([("name", "in", names)], order="last_beat_at")
        live = {row.name for row in rows if row.is_live}
        last_beats = {row.name: row.last_beat_at or None for row in rows if row.name not in live}
        found = []
        for job in jobs:
            worker = worker_of.get(job.id)
            expired = job.lease_expires_at < now
            if expired or worker in last_beats:
                found.append(
                    Orphan(
                        job_id=job.id,
                        worker=worker,
                        expires_at=job.lease_expires_at,
                        expired=expired,
                        last_beat_at=last_beats.get(worker),
                    )
                )
        return found

    def take_back_orphans(self) -> list[tuple[Orphan, str]]:
        """Take back the running jobs of ``orphans()`` now, without waiting for the leases of
        dead workers to expire: each is requeued as a new attempt in its old place in line
        (the lost attempt recorded, counted as a retry), or failed when out of retries, or
        cancelled when that was asked. Safe even when a worker presumed dead still runs: each
        job is taken by a compare-and-set on its lease, and every later write of the old
        owner is fenced by that lease, so it writes nothing more. Jobs are looked at again
        once their rows are locked (a worker that beat again meanwhile keeps its jobs).
        Returns each job taken back with its new state (queued, failed or cancelled)."""
        now = _now()
        candidates = self.jobs.browse([orphan.job_id for orphan in self.orphans(now)])
        locked = candidates.lock_for_update(skip_locked=True)
        locked = locked.filtered(lambda job: job.state == "running" and job.lease_token)
        taken = []
        for orphan in self._orphans(locked, now):
            if orphan.expired:
                lost = LOST
            else:
                lost = (
                    f"Its worker {orphan.worker} stopped beating (it died or froze) before its "
                    "lease expired."
                )
            state = self._take_back(self.jobs.browse(orphan.job_id), now, lost)
            if state:
                taken.append((orphan, state))
        return taken

    def _take_back(self, job, now: dt.datetime, lost: str) -> str | None:
        """Take the running ``job`` (its row locked) from its worker, which is gone: requeue it
        in its old place in line, or fail it when out of retries (cancel it when that was
        asked); ``lost`` says what happened, on the attempt. Returns the job's new state, or
        None when its lease changed meanwhile."""
        condition = [("state", "=", "running"), ("lease_token", "=", job.lease_token)]
        if job.cancel_requested:
            cancelled = self._close(
                job,
                condition,
                "cancelled",
                attempt_outcome="lost",
                error="Cancelled while running (its worker was gone).",
            )
            return "cancelled" if cancelled else None
        if job.retry_count < job.max_retries:
            requeued = job.write_where(
                condition,
                {
                    "state": "queued",
                    "started_at": False,
                    "retry_count": job.retry_count + 1,
                    **_CLEARED_LEASE,
                },
            )
            if not requeued:
                return None
            self._close_attempts(job, "lost", now, error=lost)
            self._signal(QUEUED, [job.provider_id.id])
            self._signal(PROGRESS, [job.id])
            return "queued"
        failed = self._close(
            job,
            condition,
            "failed",
            error=f"{lost} Gave up after {_attempts(job.retry_count + 1)}.",
            error_kind="retryable",
            attempt_outcome="lost",
        )
        return "failed" if failed else None

    def retry_due(self) -> int:
        """Requeue the failed jobs whose automatic retry is due (their queue still retrying
        automatically; otherwise the pending retry is dropped). Returns how many."""
        now = _now()
        due = self.jobs.search(
            [*RETRY_PENDING, ("next_retry_at", "<=", now)], order="next_retry_at"
        )
        retried = 0
        for job in due.lock_for_update(skip_locked=True):
            condition = [*RETRY_PENDING, ("retry_count", "=", job.retry_count)]
            if not self.queue(job.provider_id.id).auto_retry_failed:
                job.write_where(condition, {"next_retry_at": False})
            elif job.retry_count < job.max_retries and self._requeue_failed(job, condition):
                retried += 1
        return retried

    # -- actions of people ---------------------------------------------------------------------
    def retry(self, job) -> None:
        """failed -> queued, as a new attempt, when retries are left."""
        job = self.jobs.browse(job.id).lock_for_update()
        if job.state != "failed" or job.retry_count >= job.max_retries:
            reason = (
                f"it is {job.state}"
                if job.state != "failed"
                else f"it used its {job.max_retries} retries"
            )
            raise UserError(f"Cannot retry generation job {job.id}: {reason}.")
        self._requeue_failed(job, [("state", "=", "failed"), ("retry_count", "=", job.retry_count)])

    def cancel(self, job, reason: str | None = None) -> None:
        """Cancel a queued job, a failed one waiting for its retry, or a running one: a
        worker's stream is stopped at once (its partial reply kept, marked cancelled); a
        provider-side job is cancelled at the provider, best effort. ``reason`` replaces the
        message recorded for a job that had not started."""
        job = self.jobs.browse(job.id).lock_for_update()
        if job.state == "queued":
            self._close(
                job,
                [("state", "=", "queued")],
                "cancelled",
                error=reason or "Cancelled before it started.",
            )
        elif job.state == "failed" and job.next_retry_at and job.error_kind == "retryable":
            self._close(
                job, RETRY_PENDING, "cancelled", error=reason or "Cancelled before its retry."
            )
        elif job.state == "running" and job.lease_token:
            job.write_where(
                [("state", "=", "running"), ("lease_token", "=", job.lease_token)],
                {"cancel_requested": True},
            )
            self._signal(CANCEL, [job.id])
        elif job.state == "running" and job.batch_id:
            batch = job.batch_id.external_id or "(being submitted)"
            self._close(
                job,
                [("state", "=", "running"), ("batch_id", "=", job.batch_id.id)],
                "cancelled",
                error=f"Cancelled while in provider batch {batch}; its result is ignored.",
            )
        elif job.state == "running":
            self._cancel_external(job)
        else:
            raise UserError(
                f"Cannot cancel generation job {job.id}: it is {job.state}; only queued or "
                "running jobs, or failed ones waiting for their retry, can be cancelled."
            )

    def start(self, job, worker: str) -> Lease:
        """Claim this queued job now (within its queue's limit)."""
        job = self.jobs.browse(job.id)
        if job.state != "queued":
            raise self._refusal(job, "start", ("queued",))
        leases = self.claim(job.provider_id.id, worker, limit=1, job_ids=[job.id])
        if not leases:
            raise UserError(
                f"Job {job.id} cannot start now: its queue is paused or at its concurrency "
                "limit, or another worker took it."
            )
        return leases[0]

    def complete_job(self, job, output_message_id: int | None = None) -> None:
        """Mark a running job completed by hand (a manager); its worker, if any, is fenced
        out."""
        job = self.jobs.browse(job.id).lock_for_update()
        if job.state != "running":
            raise self._refusal(job, "complete", ("running",))
        self._close(
            job, [("state", "=", "running")], "completed", output_message_id=output_message_id
        )

    def fail_job(self, job, error: str) -> None:
        """Fail a queued or running job for good, by hand (a manager)."""
        job = self.jobs.browse(job.id).lock_for_update()
        if job.state not in ACTIVE_STATES:
            raise self._refusal(job, "fail", ACTIVE_STATES)
        self._close(job, [("state", "=", job.state)], "failed", error=error, error_kind="permanent")

    # -- provider-side jobs --------------------------------------------------------------------
    def check_external(self, job) -> dict | None:
        """Ask the provider about its job and apply the answer, once: the job's row stays
        locked from the question to the commit. None when the job is no longer a running
        provider-side job (another checker finished it)."""
        job = self.jobs.browse(job.id).lock_for_update()
        if job.state != "running" or not job.external_job_id:
            return None
        status = job.provider_id.check_generation_job_status(job) or {}
        self._apply_external(job, status)
        return status

    def fail_stalled_external(self, job, timeout: dt.timedelta) -> bool:
        """Fail (retryably) a provider-side job running for longer than ``timeout``."""
        job = self.jobs.browse(job.id).lock_for_update()
        if (
            job.state != "running"
            or not job.external_job_id
            or not job.started_at
            or job.started_at >= _now() - timeout
        ):
            return False
        self._fail(
            job,
            [("state", "=", "running"), ("external_job_id", "=", job.external_job_id)],
            f"No result from the provider after {timeout.total_seconds():g} s (the queue's "
            "attempt deadline).",
            retryable=True,
        )
        return True

    def _apply_external(self, job, status: dict) -> None:
        condition = [("state", "=", "running"), ("external_job_id", "=", job.external_job_id)]
        if status.get("provider_data") is not None:
            job.write_where(condition, {"provider_data": status["provider_data"]})
        state = status.get("state")
        if state == "completed":
            self._close(
                job, condition, "completed", output_message_id=status.get("output_message_id")
            )
        elif state == "failed":
            self._fail(
                job,
                condition,
                status.get("error_message") or "The provider reported a failure.",
                retryable=bool(status.get("retryable")),
            )
        # "running" or "queued": the provider still has it.

    def _cancel_external(self, job) -> None:
        """Cancel a running job that no worker holds: at its provider (best effort), then
        here."""
        if job.external_job_id:
            try:
                job.provider_id.cancel_generation_job(job)
            except Exception as error:  # the provider's side is best effort; ours is not
                _logger.warning("The provider could not cancel job %s: %s", job.id, error)
        self._close(
            job,
            [("state", "=", "running"), ("lease_token", "=", False)],
            "cancelled",
            error="Cancelled while running.",
        )

    # -- provider batches ----------------------------------------------------------------------
    def open_batch(
        self,
        provider_id: int,
        *,
        max_requests: int,
        max_bytes: int,
        request_line: Callable[[Any], bytes],
    ) -> BatchOpening | None:
        """Take the provider's queued batch jobs into a new batch, when one is due (a full
        batch's worth waits, or the oldest has waited the queue's ``batch_max_wait_seconds``):
        in claim order, up to the queue's ``batch_max_size`` and the provider's limits, each
        job running in it as a new attempt. ``request_line(job)`` is a job's line (a
        UserError fails that job: no request can be made for it). None when no batch is due."""
        queue = self.env[QUEUE].search([("provider_id", "=", provider_id)], limit=1)
        queue = queue.lock_for_update()
        if not queue or not queue.enabled:
            return None
        waiting = [
            ("provider_id", "=", provider_id),
            ("state", "=", "queued"),
            ("execution_mode", "=", "batch"),
        ]
        size = max(1, min(queue.batch_max_size, max_requests))
        candidates = self.jobs.search(waiting, order=CLAIM_ORDER, limit=size)
        now = _now()
        oldest = min((job.queued_at for job in candidates), default=None)
        waited = dt.timedelta(seconds=queue.batch_max_wait_seconds)
        if oldest is None or (len(candidates) < size and oldest > now - waited):
            return None
        lines: dict[int, bytes] = {}
        total = 0
        for job in candidates:
            try:
                data = request_line(job)
            except UserError as error:
                queued = [("state", "=", "queued")]
                self._close(job, queued, "failed", error=str(error), error_kind="permanent")
                continue
            if total + len(data) > max_bytes:
                break
            lines[job.id], total = data, total + len(data)
        if not lines:
            return None
        token, key = secrets.token_hex(16), secrets.token_hex(12)
        batch = self.env[BATCH].create(
            {
                "provider_id": provider_id,
                "protocol": queue.provider_id.service,
                "submission_key": key,
                "submit_token": token,
                "submit_expires_at": now + dt.timedelta(seconds=BATCH_SUBMIT_SECONDS),
            }
        )
        claimed = self.jobs.browse(list(lines)).write_where(
            [("state", "=", "queued")],
            {
                "state": "running",
                "started_at": now,
                "completed_at": False,
                "batch_id": batch.id,
                "cancel_requested": False,
            },
        )
        counts = {
            group["job_id"]: group["__count"]
            for group in self.env[ATTEMPT].read_group(
                [("job_id", "in", claimed.ids)], ["job_id"], ["__count"]
            )
        }
        self.env[ATTEMPT].create(
            [
                {
                    "job_id": job.id,
                    "number": counts.get(job.id, 0) + 1,
                    "worker": admission.BATCH_WORKER,
                    "started_at": now,
                }
                for job in claimed
            ]
        )
        batch.write({"request_count": len(claimed)})
        queue.write({"last_processed_at": now})
        self._signal(PROGRESS, claimed.ids)
        return BatchOpening(batch.id, token, key, [lines[job_id] for job_id in claimed.ids])

    def batch_submitted(self, batch_id: int, token: str, state: BatchState) -> bool:
        """The provider accepted the batch (``state``): record its id and status, under the
        submitter's claim. False when the claim was taken over (the submission is not ours
        to record any more)."""
        now = _now()
        recorded = (
            self.env[BATCH]
            .browse(batch_id)
            .write_where(
                [("state", "=", "submitting"), ("submit_token", "=", token)],
                {
                    "state": "running",
                    **_batch_values(state, now),
                    "submitted_at": now,
                    "submit_token": False,
                    "submit_expires_at": False,
                },
            )
        )
        if recorded:
            self._signal(PROGRESS, self._batch_jobs(recorded).ids)
        return bool(recorded)

    def batch_not_submitted(
        self,
        batch_id: int,
        token: str,
        error: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> bool:
        """The provider refused the batch: it failed, and each of its jobs fails with
        ``error`` (a retry scheduled when ``retryable``). False when the claim was taken
        over."""
        batch = self._end_submission(batch_id, token, error)
        if not batch:
            return False
        for job in self._batch_jobs(batch):
            self._fail(
                job,
                self._in_batch(batch),
                error,
                retryable=retryable,
                retry_after=retry_after,
            )
        return True

    def stale_submissions(self) -> list[int]:
        """Batches whose submitter did not record the provider's answer in time."""
        return (
            self.env[BATCH]
            .search([("state", "=", "submitting"), ("submit_expires_at", "<", _now())], order="id")
            .ids
        )

    def take_over_submission(self, batch_id: int) -> BatchOpening | None:
        """Claim a stale submission (its submitter died or froze); None when it is not stale
        any more. The old submitter's record is refused from now on."""
        token, now = secrets.token_hex(16), _now()
        batch = (
            self.env[BATCH]
            .browse(batch_id)
            .write_where(
                [("state", "=", "submitting"), ("submit_expires_at", "<", now)],
                {
                    "submit_token": token,
                    "submit_expires_at": now + dt.timedelta(seconds=BATCH_SUBMIT_SECONDS),
                },
            )
        )
        return BatchOpening(batch.id, token, batch.submission_key, []) if batch else None

    def abandon_submission(self, batch_id: int, token: str, reason: str) -> bool:
        """A taken-over submission the provider does not have: the batch failed and its jobs
        are queued again, in their old places in line, not counted as retries."""
        batch = self._end_submission(batch_id, token, reason)
        if not batch:
            return False
        for job in self._batch_jobs(batch):
            self._leave_batch(job, self._in_batch(batch), reason)
        return True

    def _end_submission(self, batch_id: int, token: str, error: str):
        """The submission failed, under the submitter's claim: the batch (empty when the
        claim was taken over)."""
        return (
            self.env[BATCH]
            .browse(batch_id)
            .write_where(
                [("state", "=", "submitting"), ("submit_token", "=", token)],
                {
                    "state": "failed",
                    "error_message": error,
                    "ended_at": _now(),
                    "submit_token": False,
                },
            )
        )

    def fail_overdue_batches(self) -> int:
        """Fail the batches still running ``BATCH_OVERDUE`` after their submission, and each
        of their jobs (retryable). Returns how many jobs failed."""
        overdue = self.env[BATCH].search(
            [("state", "=", "running"), ("submitted_at", "<", _now() - BATCH_OVERDUE)]
        )
        failed = 0
        for batch in overdue.lock_for_update(skip_locked=True, domain=[("state", "=", "running")]):
            hours = BATCH_OVERDUE.total_seconds() / 3600
            error = (
                f"Provider batch {batch.external_id} gave no result {hours:g} hours after its "
                "submission (the provider's window is 24 hours)."
            )
            if batch.error_message:
                error += f" {_sentence(batch.error_message)}"
            batch.write({"state": "failed", "ended_at": _now(), "error_message": error})
            for job in self._batch_jobs(batch):
                self._fail(job, self._in_batch(batch), error, retryable=True)
                failed += 1
        return failed

    def forget_batches(self, ended_before: dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` batches that ended (or failed) before ``ended_before`` and
        have no job left (the cleanup deleted them); returns how many."""
        gone = self.env[BATCH].search(
            [
                ("state", "in", ["ended", "failed"]),
                ("ended_at", "<", ended_before),
                ("job_ids", "=", False),
            ],
            limit=limit,
            order="id",
        )
        gone.unlink()
        return len(gone)

    def batch_cancel_sent(self, batch_id: int) -> None:
        """The batch, which no job needs any more, was cancelled at the provider."""
        self.env[BATCH].browse(batch_id).write_where(
            [("state", "=", "running")], {"cancel_sent_at": _now()}
        )

    def batch_poll_failed(self, batch_id: int, error: str) -> None:
        """A poll of the batch failed: say so on it (it is polled again)."""
        self.env[BATCH].browse(batch_id).write_where(
            [("state", "=", "running")],
            {"error_message": f"The last poll failed: {error}", "last_polled_at": _now()},
        )

    def apply_batch(
        self, batch_id: int, state: BatchState, results: Sequence[BatchResult] = ()
    ) -> int | None:
        """Record a poll of the batch; once it has ended (``state.ended``, ``results`` read),
        apply each job's result, once: a reply posted on its thread and the job completed; an
        errored request failed with its own error; a request never run failed (retryable), or
        queued again to be streamed when its queue says so. Returns how many jobs it
        finished, or None when the batch was not running (another poller applied it)."""
        batch = self.env[BATCH].browse(batch_id).lock_for_update()
        if batch.state != "running":
            return None
        now = _now()
        values = _batch_values(state, now)
        values["provider_data"] = {**(batch.provider_data or {}), **values["provider_data"]}
        if not state.ended:
            batch.write({**values, "error_message": False})
            self._signal(PROGRESS, self._batch_jobs(batch).ids)
            return 0
        condition = self._in_batch(batch)
        jobs = self._batch_jobs(batch).lock_for_update(domain=condition)
        by_id = {result.custom_id: result for result in results}
        queue = self.queue(batch.provider_id.id)
        for job in jobs:
            result = by_id.get(custom_id(job.id))
            if state.status == "failed":
                error = f"The provider refused the batch {batch.external_id}: {state.error}"
                self._fail(job, condition, error, retryable=False)
            elif result is not None and result.outcome == SUCCEEDED:
                self._complete_from_batch(job, condition, result)
            elif result is not None and result.outcome == ERRORED and result.error is not None:
                error = result.error
                self._fail(
                    job,
                    condition,
                    error.summary,
                    retryable=error.retryable,
                    retry_after=error.retry_after,
                )
            else:
                self._unrun(job, condition, result, queue, batch.external_id)
        error = state.error or False
        batch.write({**values, "state": "ended", "ended_at": now, "error_message": error})
        return len(jobs)

    def _complete_from_batch(self, job, condition: list, result: BatchResult) -> None:
        values = reply_values(result.text, result.usage, result.finish)
        reply = job.thread_id.message_post(llm_role="assistant", **values)
        spent = Spent.reported(result.usage) or self._estimate(job, result.text)
        self._close(job, condition, "completed", output_message_id=reply.id, spent=spent)

    def _unrun(self, job, condition: list, result: BatchResult | None, queue, batch: str) -> None:
        """A job whose request the provider never ran, or gave no result for."""
        if result is None:
            reason = f"Provider batch {batch} ended without a result for this request."
        elif result.outcome == EXPIRED:
            reason = f"Provider batch {batch} expired before this request ran."
        else:
            reason = f"Provider batch {batch} was cancelled before this request ran."
        if result is not None and queue.batch_requeue_unfinished:
            self._leave_batch(job, condition, f"{reason} Queued again, to be streamed.", "stream")
        else:
            self._fail(job, condition, reason, retryable=True)

    def _leave_batch(self, job, condition: list, reason: str, mode: str | None = None) -> None:
        """Queue a job of a batch again, in its old place in line (not counted as a retry);
        as a ``mode`` job when given."""
        values: dict[str, Any] = {"state": "queued", "started_at": False, "batch_id": False}
        if mode:
            values["execution_mode"] = mode
        if job.write_where(condition, values):
            self._close_attempts(job, "interrupted", _now(), error=reason)
            self._signal(QUEUED, [job.provider_id.id])
            self._signal(PROGRESS, [job.id])

    def _batch_jobs(self, batch):
        return self.jobs.search([("batch_id", "=", batch.id), ("state", "=", "running")])

    @staticmethod
    def _in_batch(batch) -> list:
        return [("state", "=", "running"), ("batch_id", "=", batch.id)]

    # -- thread ------------------------------------------------------------------------------
    def busy_job(self, thread_id: int):
        """A job keeping the thread busy (queued, running, or waiting for its retry)."""
        return self.jobs.search([("thread_id", "=", thread_id), *BUSY], limit=1)

    # -- shared steps --------------------------------------------------------------------------
    def _fail(
        self,
        job,
        condition: list,
        error: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        attempt_id: int | None = None,
    ) -> None:
        """Fail the attempt; the job's error says what happened and what happens next."""
        queue = self.queue(job.provider_id.id)
        retry_at, attempt = False, job.retry_count + 1
        if not retryable:
            text = error.strip()  # the provider's words, as they are
        elif not queue.auto_retry_failed:
            text = f"{_sentence(error)} Not retried: its queue does not retry automatically "
            text += "(retry it by hand)."
        elif job.retry_count >= job.max_retries:
            text = f"{_sentence(error)} Gave up after {_attempts(attempt)}."
        else:
            delay = backoff.retry_delay(job.retry_count, queue.retry_delay_minutes, retry_after)
            retry_at = _now() + dt.timedelta(seconds=delay)
            text = (
                f"{_sentence(error)} Retrying at {retry_at:%H:%M:%S} UTC (attempt {attempt + 1} "
                f"of {job.max_retries + 1})."
            )
        self._close(
            job,
            condition,
            "failed",
            error=text,
            error_kind="retryable" if retryable else "permanent",
            next_retry_at=retry_at,
            attempt_id=attempt_id,
        )

    def _requeue_failed(self, job, condition: list) -> bool:
        requeued = job.write_where(
            condition,
            {
                "state": "queued",
                "retry_count": job.retry_count + 1,
                "queued_at": _now(),
                "started_at": False,
                "completed_at": False,
                "error_message": False,
                "error_kind": False,
                "external_job_id": False,
                "batch_id": False,
                "provider_data": False,  # a new attempt: a new batch or response
                "next_retry_at": False,
                "cancel_requested": False,
            },
        )
        if requeued:
            self._signal(QUEUED, [job.provider_id.id])
            self._signal(PROGRESS, [job.id])
        return bool(requeued)

    def _close(
        self,
        job,
        condition: list,
        state: str,
        *,
        error: str | None = None,
        error_kind: str | None = None,
        output_message_id: int | None = None,
        next_retry_at: Any = False,
        attempt_outcome: str | None = None,
        attempt_id: int | None = None,
        spent: Spent | None = None,
    ) -> bool:
        """End the job in ``state`` (where ``condition`` still holds), with its attempt (and
        what it ``spent``: estimated from its stream log when None) and its reply; False when
        the condition no longer held."""
        now = _now()
        values: dict[str, Any] = {
            "state": state,
            "completed_at": now,
            **_CLEARED_LEASE,
            "next_retry_at": next_retry_at,
        }
        if error is not None:
            values.update(error_message=error, error_kind=error_kind or False)
        if output_message_id:
            values["output_message_id"] = output_message_id
        if not job.write_where(condition, values):
            return False
        self._close_attempts(
            job, attempt_outcome or state, now, error=error, attempt_id=attempt_id, spent=spent
        )
        message = job.output_message_id
        if message and state in ("failed", "cancelled") and message.state != "done":
            message.write(
                {"state": "cancelled" if state == "cancelled" else "error", "error": error or False}
            )
        self._signal(PROGRESS, [job.id])
        return True

    def _close_attempts(
        self,
        job,
        outcome: str,
        now: dt.datetime,
        *,
        error: str | None = None,
        attempt_id: int | None = None,
        spent: Spent | None = None,
    ) -> None:
        """End the job's running attempt (``attempt_id``, else whichever is running) and
        write what it ``spent`` to the usage ledger (estimated from its stream log when
        None)."""
        attempts = self.env[ATTEMPT].browse(attempt_id) if attempt_id else job.attempt_ids
        self._end_attempts([(job, attempts, spent)], outcome, now, error=error)

    def _end_attempts(
        self,
        ends: Sequence[tuple[Any, Any, Spent | None]],
        outcome: str,
        now: dt.datetime,
        *,
        error: str | None = None,
        first_tokens: Collection[int] = (),
    ) -> None:
        """End the running ones of the attempts of each ``(job, attempts, spent)`` in
        ``outcome``, and write what each spent to the usage ledger (``spent``; estimated from
        its stream log when None): an UPDATE and an INSERT for them all. Those of
        ``first_tokens`` got their first piece with their end: their UPDATE stamps it too (a
        second UPDATE, when others end with them)."""
        jobs = {attempt_id: job for job, attempts, _ in ends for attempt_id in attempts.ids}
        spent = {attempt_id: used for _, attempts, used in ends for attempt_id in attempts.ids}
        attempts = self.env[ATTEMPT].browse(list(jobs))
        values = {"outcome": outcome, "ended_at": now, "error_message": error or False}
        running = [("outcome", "=", "running")]
        firsts = attempts.filtered(lambda attempt: attempt.id in first_tokens)
        closed = (attempts - firsts).write_where(running, values) | firsts.write_where(
            running, {**values, "first_token_at": now}
        )
        rows = []
        for attempt in closed:
            job = jobs[attempt.id]
            used = spent[attempt.id]
            if used is None:
                used = self._estimate(job, self._logged(attempt))
            cost, priced = (0.0, False)
            if job.model_id:
                cost, priced = job.model_id._cost(
                    used.prompt, used.completion, used.cached, job.execution_mode == "batch"
                )
            rows.append(
                {
                    "attempt_id": attempt.id,
                    "job_id": job.id,
                    "user_id": job.user_id.id,
                    "provider_id": job.provider_id.id,
                    "model_id": job.model_id.id or False,
                    "thread_id": job.thread_id.id,
                    "execution_mode": job.execution_mode or "stream",
                    "outcome": outcome if outcome != "running" else "interrupted",
                    "prompt_tokens": used.prompt,
                    "completion_tokens": used.completion,
                    "cached_tokens": used.cached,
                    "estimated": used.estimated,
                    "cost": cost,
                    "priced": priced,
                    "ended_at": now,
                }
            )
        if rows:
            self.env[USAGE].create(rows)

    def _logged(self, attempt) -> str:
        """The text an attempt logged."""
        chunks = self.env[CHUNK].search(
            [("job_id", "=", attempt.job_id.id), ("attempt", "=", attempt.number)], order="seq"
        )
        return "".join(chunk.content or "" for chunk in chunks)

    def _estimate(self, job, text: str) -> Spent:
        """What an attempt that streamed ``text`` used, when its provider did not say: its
        prompt (the job's conversation) and ``text``, estimated as admission estimates them.
        An attempt that streamed nothing was billed nothing."""
        if not text:
            return NOTHING
        messages, _, _ = job._generation_request()
        prompt = admission.prompt_tokens(messages)
        return Spent(prompt=prompt, completion=admission.tokens_in(text), estimated=True)

    def _refusal(self, job, action: str, allowed: Sequence[str]) -> UserError:
        job.invalidate_recordset(["state"])
        return UserError(
            f"Cannot {action} generation job {job.id}: it is {job.state}; only "
            f"{' or '.join(allowed)} jobs can be {_PAST[action]}."
        )
