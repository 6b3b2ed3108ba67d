"""Usage over HTTP: the tokens and cost of the usage ledger, grouped.

::

    GET /api/usage   ?by=day|user|provider|model|thread|job (default day)
                     &since=&until= (ISO 8601, UTC unless they say; default the last 30 days)
                     &provider_id=&user_id=

The report is read as the calling user, so the ledger's record rules decide what it counts:
an ordinary user's own usage, every user's for an LLM manager. ``usage_report`` computes it;
``llmjobs usage`` and the dashboard's usage page call it too, so all three agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from core.exceptions import ValidationError
from core.fields import to_utc
from core.http import CurrentUser

router = APIRouter(prefix="/api", tags=["usage"])

USAGE = "llm.generation.usage"
Grouping = Literal["day", "user", "provider", "model", "thread", "job"]
GROUPINGS: tuple[str, ...] = get_args(Grouping)
DEFAULT_DAYS = 30
# The records a group's key names, and what a group without one (deleted, none) is called.
RECORDS: dict[str, tuple[str, str]] = {
    "user": ("res.users", "(deleted user)"),
    "provider": ("llm.provider", "(deleted provider)"),
    "model": ("llm.model", "(no model)"),
    "thread": ("llm.thread", "(deleted thread)"),
    "job": ("llm.generation.job", "(deleted job)"),
}
SUMS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost")
AGGREGATES = ("__count", *(f"{name}:sum" for name in SUMS))


class UsageCounts(BaseModel):
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = Field(0, description="Of the prompt tokens, those read from the cache")
    cost: float = Field(0.0, description="USD, by the models' prices when the attempts ended")
    estimated_attempts: int = Field(
        0, description="Attempts whose tokens are estimated (their provider reported none)"
    )


class UsageGroup(UsageCounts):
    key: int | str | None = Field(
        description="The user's, provider's, ... id; by day, the day (UTC) as YYYY-MM-DD; "
        "null for attempts without one (no model, a deleted thread or job)"
    )
    label: str


class UsageReport(BaseModel):
    by: Grouping
    since: dt.datetime
    until: dt.datetime
    groups: list[UsageGroup] = Field(
        description="By day, oldest first; else the most expensive first"
    )
    totals: UsageCounts


def period(
    since: dt.datetime | None, until: dt.datetime | None, now: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """The report's period, in UTC (a moment without a zone is UTC): ``until`` defaults to
    now, ``since`` to DEFAULT_DAYS before ``until``."""
    until = to_utc(until) if until else now or dt.datetime.now(dt.UTC)
    since = to_utc(since) if since else until - dt.timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise ValidationError(
            f"The period is empty: since ({since.isoformat()}) must be before until "
            f"({until.isoformat()})."
        )
    return since, until


def usage_report(
    env,
    by: str = "day",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    provider_id: int | None = None,
    user_id: int | None = None,
) -> UsageReport:
    """The ledger's rows that ``env``'s user may read, ended in the period, summed per ``by``
    (a ValidationError for an unknown ``by`` or an empty period)."""
    if by not in GROUPINGS:
        raise ValidationError(f"Unknown grouping '{by}': use one of {', '.join(GROUPINGS)}.")
    since, until = period(since, until)
    domain: list = [("ended_at", ">=", since), ("ended_at", "<", until)]
    if provider_id is not None:
        domain.append(("provider_id", "=", provider_id))
    if user_id is not None:
        domain.append(("user_id", "=", user_id))
    counts = _grouped(env, domain, by)
    labels = _labels(env, by, list(counts))
    groups = [UsageGroup(key=key, label=labels[key], **found) for key, found in counts.items()]
    if by == "day":
        groups.sort(key=lambda group: group.key)
    else:
        groups.sort(key=lambda group: (-group.cost, -group.attempts, group.label))
    return UsageReport(by=by, since=since, until=until, groups=groups, totals=_totals(groups))


def _grouped(env, domain: list, by: str) -> dict[int | str | None, dict]:
    """The sums per key, the estimated attempts counted by grouping on ``estimated`` too.

    Days are UTC days folded from hours: PostgreSQL truncates a moment to its day in the
    session's time zone (the server's setting), but to the same hour in any zone a whole
    number of hours away from UTC."""
    spec = "ended_at:hour" if by == "day" else f"{by}_id"
    rows = env[USAGE].read_group(domain, [spec, "estimated"], AGGREGATES)
    found: dict[int | str | None, dict] = {}
    for row in rows:
        key = row[spec].astimezone(dt.UTC).date().isoformat() if by == "day" else row[spec]
        counts = found.setdefault(key or None, UsageCounts().model_dump())
        counts["attempts"] += row["__count"]
        for name in SUMS:
            counts[name] += row[f"{name}:sum"] or 0
        if row["estimated"]:
            counts["estimated_attempts"] += row["__count"]
    return found


def _labels(env, by: str, keys: list) -> dict:
    """A readable name per key. Read as the superuser: the keys come from ledger rows the
    user may read, and an ordinary user may not read providers, say."""
    if by == "day":
        return {key: key for key in keys}
    model, missing = RECORDS[by]
    ids = [key for key in keys if key]
    labels: dict = {None: missing}
    for record in env[model].sudo().browse(ids).exists():
        labels[record.id] = _label(by, record)
    return {key: labels.get(key, f"{missing[1:-1]} {key}") for key in keys}


def _label(by: str, record) -> str:
    if by == "model":
        return f"{record.name} ({record.provider_id.name})"
    if by == "thread":
        return record.name or f"Thread {record.id}"
    if by == "job":
        return f"#{record.id} {record.name}" if record.name else f"Job {record.id}"
    return record.name


def _totals(groups: list[UsageGroup]) -> UsageCounts:
    fields = UsageCounts.model_fields
    return UsageCounts(**{name: sum(getattr(group, name) for group in groups) for name in fields})


def format_cost(cost: float | None) -> str:
    """A cost in USD as people read it: ``$12.50``; below a dollar to the millionth (one
    attempt often costs a fraction of a cent), ``$0.000135``."""
    if cost is None:
        return "-"
    if cost == 0:
        return "$0"
    if cost < 0.000_001:
        return "< $0.000001"
    return f"${cost:.6f}" if cost < 1 else f"${cost:,.2f}"


@router.get("/usage")
def read_usage(
    user: CurrentUser,
    by: Annotated[Grouping, Query(description="What the groups are")] = "day",
    since: Annotated[
        dt.datetime | None,
        Query(description="ISO 8601 (UTC unless it says); default 30 days before `until`"),
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="ISO 8601; default now")] = None,
    provider_id: Annotated[int | None, Query(ge=1)] = None,
    user_id: Annotated[
        int | None, Query(ge=1, description="Whose usage (managers see everyone's)")
    ] = None,
) -> UsageReport:
    """Tokens and cost of the attempts that ended in the period, per ``by``: the user's own,
    or every user's for an LLM manager."""
    with user.environment(readonly=True) as env:
        return usage_report(env, by, since, until, provider_id, user_id)
