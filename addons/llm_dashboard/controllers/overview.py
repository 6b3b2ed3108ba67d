"""The overview: counts per state, a card per queue, the LLM figures, failures grouped by
error, long-running and stalled jobs, live workers (``monitoring.overview``, as the page's
user: an ordinary user's job lists are their own jobs).

::

    GET /web/                       ?fragment=1: the page's body only (the live page fetches
                                    it again at each event)
    GET /web/events/jobs            Server-Sent Events: "jobs changed" (changes.py)
    GET /, GET /web                 to /web/
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from addons.llm_generation_job.monitoring import DAY_BUCKET, HOUR_BUCKET, overview
from core.http import PageUser, event_stream, render

from ..changes import job_changes
from ..charts import stacked_bars

router = APIRouter()
# The placeholders of monitoring.normalize_error: what differs between alike errors.
_PLACEHOLDER = re.compile(r"<(?:id|time|n)>|\.\.\.$")


def search_text(error: str) -> str:
    """The longest run of a normalized error that the original errors contain as such: the
    job list's text filter for the group."""
    return max((part.strip(" :,.()'\"") for part in _PLACEHOLDER.split(error)), key=len)


def _context(user) -> dict:
    with user.environment(readonly=True) as env:
        data = overview(env)
    for queue in data["queues"]:
        queue["hour_chart"] = stacked_bars(queue["hour"]["series"], HOUR_BUCKET)
        queue["day_chart"] = stacked_bars(queue["day"]["series"], DAY_BUCKET)
    for group in data["failure_groups"]:
        group["search"] = search_text(group["error"])
    return {"data": data}


@router.get("/", include_in_schema=False)
@router.get("/web", include_in_schema=False)
def home() -> Response:
    return RedirectResponse("/web/", status_code=303)


@router.get("/web/")
def overview_page(request: Request, user: PageUser, fragment: bool = False) -> Response:
    name = "llm_dashboard/_overview.html" if fragment else "llm_dashboard/overview.html"
    return render(request, name, **_context(user))


@router.get("/web/events/jobs")
def job_events(user: PageUser, after: int = Query(0, ge=0)):
    """A "changed" event when jobs change (at most one a second, at least one every two)."""
    return event_stream(job_changes(user.registry, after), lambda update: str(update["n"]))
