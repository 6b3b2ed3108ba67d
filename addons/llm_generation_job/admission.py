"""Who may start now: what a claim (``JobStore.claim``) asks beyond the queue's concurrency,
in the claim's transaction, with the queue's row locked, so that every worker on every
machine takes these decisions one at a time, on the same figures, kept in the database:

- **cooldown** (a circuit breaker per provider): after ``breaker_threshold`` retryable
  failures in a row the queue is *open* for ``breaker_cooldown_seconds`` (nothing starts);
  then *half-open*: one probe starts, whose success closes it and whose failure opens it
  again. The provider's own word counts the same way: a 429's ``Retry-After``, or
  remaining-requests headers at 0, hold every worker until ``throttled_until``.
- **rate limits**: requests and tokens per minute per provider (the queue's ``rpm_limit``,
  ``tpm_limit``) and per model (``llm.model``'s): counted from the attempts started in the last
  60 seconds, whatever worker started them; a job's tokens are estimated when it starts.
- **budgets** (``llm.budget``): a job whose estimated cost would take a budget past its hard
  limit waits (``waiting_reason``, ``eligible_at``: when the budget resets).
- **fair share** (``fair_share = 'user'``): among the jobs of the highest priority, the user
  served the fewest tokens in the last hour (with what this claim gives out) goes next: a
  user's hundred long jobs do not starve another's short one.

The store applies what is decided here (the writes); this module reads and computes.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW = dt.timedelta(minutes=1)  # rate limits are per minute
# An attempt counts a little longer than a minute: its request reaches the provider a moment
# after the claim stamped its start, and the provider's minute is counted from then.
COUNTED = WINDOW + dt.timedelta(seconds=2)
SOON = dt.timedelta(seconds=1)  # when a queue waiting for its tokens looks again
FAIR_SHARE_WINDOW = dt.timedelta(hours=1)
EXPECTED_COMPLETION = 500  # tokens a reply is expected to take, when nothing says better
CHARS_PER_TOKEN = 4  # how tokens are estimated when nothing better is known
BATCH_WORKER = "provider batch"  # the worker of a batch job's attempt


@dataclass
class Gate:
    """What the queue lets start now: ``slots`` (None: no limit of its own beyond the
    concurrency), ``tokens`` a minute left (None: no token limit), and when nothing may
    start, why and until when."""

    slots: int | None = None
    tokens: int | None = None
    reason: str | None = None
    until: dt.datetime | None = None
    probe: bool = False  # the one job it lets start is the breaker's probe
    opened: dict[str, Any] = field(default_factory=dict)  # breaker fields to write

    def close(self, reason: str, until: dt.datetime | None) -> None:
        self.slots, self.reason, self.until = 0, reason, until


def gate(env, queue, now: dt.datetime) -> Gate:
    """The queue's gate now: its cooldown, its provider's request, then its own limits."""
    found = Gate()
    if queue.throttled_until and queue.throttled_until > now:
        found.close(throttled(queue.throttled_until), queue.throttled_until)
        return found
    if queue.breaker_state == "open":
        if queue.breaker_until and queue.breaker_until > now:
            found.close(
                cooled_down(
                    queue.breaker_since,
                    queue.consecutive_failures,
                    queue.breaker_reason,
                    queue.breaker_until,
                ),
                queue.breaker_until,
            )
            return found
        found.slots, found.probe = 1, True  # the cooldown is over: one probe
        found.opened = {"breaker_state": "half_open", "breaker_until": now + 4 * WINDOW}
    elif queue.breaker_state == "half_open":
        if queue.breaker_until and queue.breaker_until > now:
            found.close(
                f"A probe request is deciding whether the provider recovered (since "
                f"{queue.breaker_since:%H:%M:%S} UTC: {queue.breaker_reason}).",
                queue.breaker_until,
            )
            return found
        found.slots, found.probe = 1, True  # the probe was lost: another one
        found.opened = {"breaker_until": now + 4 * WINDOW}
    _limit(env, found, [("provider_id", "=", queue.provider_id.id)], queue, now, "its provider")
    return found


def throttled(until: dt.datetime) -> str:
    """Why a queue the provider asked to wait starts nothing."""
    return f"The provider asked to wait (rate limited) until {until:%H:%M:%S} UTC."


def cooled_down(since: dt.datetime, failures: int, reason: str, until: dt.datetime) -> str:
    """Why an open breaker's queue starts nothing."""
    return (
        f"Cooled down since {since:%H:%M:%S} UTC after {failures} failures in a row "
        f"({reason}); one probe request at {until:%H:%M:%S} UTC decides when it reopens."
    )


def _limit(env, found: Gate, scope: list, limits, now: dt.datetime, whose: str) -> None:
    """Narrow ``found`` by the requests and tokens a minute of ``limits`` (a queue or a
    model) over the attempts of ``scope``."""
    if not (limits.rpm_limit or limits.tpm_limit):
        return
    attempts = env["llm.generation.job.attempt"].search(
        [*scope, ("started_at", ">", now - COUNTED), ("worker", "!=", BATCH_WORKER)],
        order="started_at",
    )
    if limits.rpm_limit:
        left = limits.rpm_limit - len(attempts)
        found.slots = left if found.slots is None else min(found.slots, left)
        if left <= 0:
            until = attempts[-limits.rpm_limit].started_at + COUNTED if attempts else now
            found.close(
                f"Rate limit of {whose}: {limits.rpm_limit} requests a minute; the next one at "
                f"{until:%H:%M:%S} UTC.",
                until,
            )
            return
    if limits.tpm_limit:
        used = sum(_attempt_tokens(env, attempts))
        left = limits.tpm_limit - used
        found.tokens = left if found.tokens is None else min(found.tokens, left)
        if left <= 0:
            until = attempts[0].started_at + COUNTED if attempts else now
            found.close(
                f"Rate limit of {whose}: {limits.tpm_limit} tokens a minute; more at "
                f"{until:%H:%M:%S} UTC.",
                until,
            )


def _attempt_tokens(env, attempts) -> list[int]:
    """Tokens of each attempt: the ledger's once it ended, else its estimate at its start."""
    rows = env["llm.generation.usage"].search([("attempt_id", "in", attempts.ids)])
    known = {row.attempt_id.id: row.total_tokens for row in rows}
    return [known.get(a.id, a.estimated_tokens) for a in attempts]


def tokens_in(text: str) -> int:
    """About how many tokens ``text`` is: CHARS_PER_TOKEN characters a token, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(messages: list[dict]) -> int:
    """About how many tokens a conversation is."""
    return tokens_in("".join(str(message.get("content") or "") for message in messages))


def estimate_tokens(job) -> tuple[int, int]:
    """A job's expected prompt and completion tokens: its conversation (``prompt_tokens``),
    and its ``max_tokens`` (else the model's average reply in the ledger, else
    EXPECTED_COMPLETION)."""
    messages, _, options = job._generation_request()
    prompt = prompt_tokens(messages)
    asked = options.get("max_tokens") or options.get("max_completion_tokens")
    if isinstance(asked, int) and asked > 0:
        return prompt, asked
    if job.model_id:
        groups = (
            job.env["llm.generation.usage"]
            .sudo()
            .read_group(
                [("model_id", "=", job.model_id.id), ("outcome", "=", "completed")],
                [],
                ["completion_tokens:avg"],
            )
        )
        average = groups[0]["completion_tokens:avg"] if groups else None
        if average:
            return prompt, int(average)
    return prompt, EXPECTED_COMPLETION


def estimate_cost(job) -> float:
    prompt, completion = estimate_tokens(job)
    if not job.model_id:
        return 0.0
    return job.model_id._cost(prompt, completion, 0, job.execution_mode == "batch")[0]


# -- which jobs ----------------------------------------------------------------------------
def candidates(env, queue, domain: list, free: int, order: str):
    """Up to ``free`` queued jobs to start, in the order the queue serves them."""
    jobs = env["llm.generation.job"]
    if queue.fair_share != "user":
        return jobs.search_fetch(domain, order=order, limit=free)
    top = jobs.search_fetch(domain, order=order, limit=1)
    if not top:
        return top
    domain = [*domain, ("priority", "=", top.priority)]
    users = [g["user_id"] for g in jobs.read_group(domain, ["user_id"], ["__count"])]
    per_user = {
        user: list(jobs.search_fetch([*domain, ("user_id", "=", user)], order=order, limit=free))
        for user in users
    }
    served = _served(env, queue, users)
    picked = []
    while len(picked) < free and any(per_user.values()):
        user = min((u for u in per_user if per_user[u]), key=lambda u: (served[u], u))
        job = per_user[user].pop(0)
        picked.append(job.id)
        served[user] += sum(estimate_tokens(job))
    return jobs.browse(picked)


def _served(env, queue, users: Sequence[int]) -> dict[int, float]:
    """Tokens each user was served on the queue's provider lately, with what runs now."""
    now = dt.datetime.now(dt.UTC)
    provider = [("provider_id", "=", queue.provider_id.id), ("user_id", "in", list(users))]
    served: dict[int, float] = defaultdict(float)
    for group in env["llm.generation.usage"].read_group(
        [*provider, ("ended_at", ">", now - FAIR_SHARE_WINDOW)], ["user_id"], ["total_tokens:sum"]
    ):
        served[group["user_id"]] += group["total_tokens:sum"] or 0
    for job in env["llm.generation.job"].search([*provider, ("state", "=", "running")]):
        served[job.user_id.id] += sum(estimate_tokens(job))
    return served


@dataclass
class Admitted:
    """The jobs a claim may start, what each reserves of the budgets, and those that wait,
    with why and until when."""

    jobs: list = field(default_factory=list)
    reserved: dict[int, float] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)  # estimated, under token limits
    blocked: str | None = None  # why the next job in line waits for the queue's tokens
    waiting: list[tuple[Any, str, dt.datetime | None]] = field(default_factory=list)


def admit(env, queue, candidates, found: Gate, now: dt.datetime) -> Admitted:
    """The candidates within the tokens a minute left, the models' own limits and the
    budgets, in order."""
    admitted = Admitted()
    tokens_left = found.tokens
    budgets = env["llm.budget"]
    has_budgets = bool(budgets.sudo().search_count([("active", "=", True)]))
    models: dict[int, Gate] = {}
    book = BudgetBook(env, now)
    for job in candidates:
        model = job.model_id
        if model and (model.rpm_limit or model.tpm_limit):
            if model.id not in models:
                models[model.id] = Gate()
                scope = [("job_id.model_id", "=", model.id)]
                _limit(env, models[model.id], scope, model, now, f"model '{model.name}'")
            limit = models[model.id]
            if limit.slots == 0 or (limit.tokens is not None and limit.tokens <= 0):
                # The model's limit: its jobs wait (the queue's others go on).
                until = limit.until or now + COUNTED  # spent by this claim's own jobs
                reason = limit.reason or (
                    f"Rate limit of model '{model.name}': {model.rpm_limit} requests a minute; "
                    f"the next one at {until:%H:%M:%S} UTC."
                )
                admitted.waiting.append((job, reason, until))
                continue
        limit = models.get(model.id)
        tokens = None
        if tokens_left is not None or (limit and limit.tokens is not None):
            tokens = sum(estimate_tokens(job))
            if limit and limit.tokens is not None and tokens > limit.tokens:
                reason = (
                    f"Rate limit of model '{model.name}': {model.tpm_limit} tokens a minute; "
                    f"{limit.tokens} are left and this job needs about {tokens}."
                )
                admitted.waiting.append((job, reason, now + SOON))
                continue
            if tokens_left is not None and tokens > tokens_left:
                admitted.blocked = (
                    f"Rate limit of its provider: {queue.tpm_limit} tokens a minute; "
                    f"{max(tokens_left, 0)} are left and the next job needs about {tokens}."
                )
                break
        if has_budgets:
            cost = estimate_cost(job)
            refusal = book.refusal(job, cost)
            if refusal:
                admitted.waiting.append((job, *refusal))
                continue
            admitted.reserved[job.id] = book.reserve(job, cost)
        if tokens is not None:
            admitted.tokens[job.id] = tokens
            if tokens_left is not None:
                tokens_left -= tokens
        if limit:
            limit.slots = None if limit.slots is None else limit.slots - 1
            if limit.tokens is not None and tokens is not None:
                limit.tokens -= tokens
        admitted.jobs.append(job)
    return admitted


class BudgetBook:
    """The budgets' spend during one claim: the ledger, the reservations of running jobs,
    and what this claim reserves as it goes."""

    def __init__(self, env, now: dt.datetime):
        self.env, self.now = env, now
        self.spent: dict[int, float] = {}

    def _spend(self, budget) -> float:
        if budget.id not in self.spent:
            running = self.env["llm.generation.job"].search(
                [*budget._scope_domain(), ("state", "=", "running")]
            )
            reserved = sum(running.mapped("reserved_cost"))
            self.spent[budget.id] = budget._spent(self.now) + reserved
        return self.spent[budget.id]

    def refusal(self, job, cost: float | None = None) -> tuple[str, dt.datetime] | None:
        """Why ``job`` (expected to cost ``cost``) would pass a hard limit, and when that
        budget resets; None when it fits every budget."""
        cost = estimate_cost(job) if cost is None else cost
        for budget in self.env["llm.budget"]._applying(job.user_id.id, job.provider_id.id):
            if not budget.hard_limit:
                continue
            spend = self._spend(budget)
            if spend + cost > budget.hard_limit:
                resets = budget._resets_at(self.now)
                return (
                    f"The {budget._describe()} has too little left: ${spend:.4f} of "
                    f"${budget.hard_limit:.4f} spent, and this job would cost about "
                    f"${cost:.4f}; it resets at {resets:%Y-%m-%d %H:%M} UTC.",
                    resets,
                )
        return None

    def reserve(self, job, cost: float) -> float:
        for budget in self.env["llm.budget"]._applying(job.user_id.id, job.provider_id.id):
            self.spent[budget.id] = self._spend(budget) + cost
        return cost

    def soft_passed(self, job, cost: float) -> list:
        """The budgets whose soft threshold ``job`` passes."""
        return [
            budget
            for budget in self.env["llm.budget"]._applying(job.user_id.id, job.provider_id.id)
            if budget.soft_limit and self._spend(budget) + cost > budget.soft_limit
        ]
