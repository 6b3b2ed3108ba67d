"""The usage page: tokens and cost of the last 30 days, per day and per user, provider, model
or thread (a GET form's ``by``), from the usage ledger.

::

    GET /web/usage    ?by=user|provider|model|thread (default: user for managers, else
                      provider)

The tables are the HTTP API's own report (``usage_report``, ``GET /api/usage``), read as the
page's user: an ordinary user's own usage, every user's for an LLM manager.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from addons.llm_generation_job.controllers.usage import (
    UsageCounts,
    UsageReport,
    format_cost,
    period,
    usage_report,
)
from core.http import PageUser, render

router = APIRouter()
Breakdown = Literal["user", "provider", "model", "thread"]
BREAKDOWNS: dict[str, str] = {
    "user": "User",
    "provider": "Provider",
    "model": "Model",
    "thread": "Thread",
}


def shares(report: UsageReport) -> dict:
    """Each group's part of the largest, in percent, for its bar: by cost, or by tokens when
    nothing had prices."""

    def size(group: UsageCounts) -> float:
        if report.totals.cost:
            return group.cost
        return group.prompt_tokens + group.completion_tokens

    largest = max((size(group) for group in report.groups), default=0)
    return {group.key: 100 * size(group) / largest if largest else 0 for group in report.groups}


@router.get("/web/usage")
def usage_page(request: Request, user: PageUser, by: Breakdown | None = None) -> Response:
    by = by or ("user" if user.is_manager else "provider")
    since, until = period(None, None)  # one period for both tables
    with user.environment(readonly=True) as env:
        daily = usage_report(env, "day", since, until)
        breakdown = usage_report(env, by, since, until)
    return render(
        request,
        "llm_dashboard/usage.html",
        by=by,
        choices=BREAKDOWNS,
        daily=daily,
        daily_shares=shares(daily),
        breakdown=breakdown,
        cost=format_cost,
    )
