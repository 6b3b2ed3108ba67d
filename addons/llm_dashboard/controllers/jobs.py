"""The job list: the API's filters as a GET form, cursor pages, and bulk retry and cancel, on
the selected jobs or on every job matching the filters (counted and confirmed first).

::

    GET  /web/jobs                    filters (state, provider, model, user, thread, dates, text)
                                      ?cursor= the next page; ?fragment=rows: the rows only
    POST /web/jobs/bulk               action, ids: on the selected jobs
    GET  /web/jobs/bulk/confirm       action + the filters: how many match, and a form to confirm
    POST /web/jobs/bulk/filter        action + the filters: on every job matching them

The rows and the bulk actions are the HTTP API's own (``list_jobs``, ``bulk_action``), run as
the page's user: an ordinary user lists and acts on their own jobs only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import pydantic
from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams

from addons.llm_generation_job.controllers.jobs import BULK_LIMIT, BulkIn, bulk_action, list_jobs
from addons.llm_generation_job.job_filter import JobFilter
from addons.llm_generation_job.models.llm_generation_job import STATES
from core.http import PageUser, WebUser, render
from core.http.pages import safe_next

from .common import field_errors

router = APIRouter()
Action = Literal["cancel", "retry"]
SINGLE = ("provider_id", "model_id", "user_id", "thread_id", "q")
DATES = ("created_after", "created_before", "finished_after", "finished_before")
LABELS = {
    "state": "State",
    "provider_id": "Provider",
    "model_id": "Model",
    "user_id": "User",
    "thread_id": "Thread",
    "created_after": "Created from",
    "created_before": "Created before",
    "finished_after": "Finished from",
    "finished_before": "Finished before",
    "q": "Error text",
}
VERBS = {"cancel": "Cancel", "retry": "Retry"}


@dataclass
class JobQuery:
    """The filters of a request: as a ``JobFilter`` (None when invalid), as the form shows
    them, and the fields' errors."""

    filter: JobFilter | None
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def pairs(self) -> list[tuple[str, str]]:
        """The filters as query-string pairs (states repeated)."""
        pairs = [("state", state) for state in self.values.get("state", [])]
        pairs += [(name, self.values[name]) for name in (*SINGLE, *DATES) if name in self.values]
        return pairs

    def url(self, path: str = "/web/jobs", **extra: Any) -> str:
        pairs = self.pairs() + [(name, str(value)) for name, value in extra.items()]
        return f"{path}?{urlencode(pairs)}" if pairs else path

    def described(self) -> list[tuple[str, str]]:
        """(label, value) of each filter given, for a sentence on the confirmation page."""
        shown = [("State", ", ".join(self.values["state"]))] if self.values.get("state") else []
        return shown + [
            (LABELS[name], self.values[name]) for name in (*SINGLE, *DATES) if name in self.values
        ]


def read_query(params: QueryParams | FormData, user: WebUser) -> JobQuery:
    """The filters of a GET form's query string (or a POSTed form): empty fields are not
    filters; dates without a zone are UTC; an ordinary user's jobs are theirs anyway, so
    ``user_id`` is a manager's filter."""
    values: dict[str, Any] = {}
    states = [state for state in params.getlist("state") if isinstance(state, str) and state]
    if states:
        values["state"] = states
    for name in (*SINGLE, *DATES):
        value = params.get(name)
        if isinstance(value, str) and value.strip():
            values[name] = value.strip()
    if not user.is_manager:
        values.pop("user_id", None)
    try:
        found = JobFilter.model_validate(values)
    except pydantic.ValidationError as error:
        return JobQuery(None, values, field_errors(error, LABELS))
    dates = {
        name: moment.replace(tzinfo=dt.UTC)
        for name in DATES
        if (moment := getattr(found, name)) is not None and moment.tzinfo is None
    }
    return JobQuery(found.model_copy(update=dates), values)


def _choices(env, user: WebUser) -> dict[str, list[tuple[int, str]]]:
    """The options of the filter form's selects."""
    providers = env["llm.provider"].sudo().search([])  # names only: users may not read them
    models = env["llm.model"].search([])
    choices = {
        "states": [(state, label) for state, label in STATES if state != "draft"],
        "providers": [(p.id, p.name) for p in providers],
        "models": [(m.id, f"{m.name} ({m.provider_id.sudo().name})") for m in models],
        "users": [],
    }
    if user.is_manager:
        users = env["res.users"].search([("active", "=", True), ("id", "!=", 1)], limit=500)
        choices["users"] = [(u.id, f"{u.name} ({u.login})") for u in users]
    return choices


@router.get("/web/jobs")
def jobs_page(
    request: Request,
    user: PageUser,
    cursor: int | None = Query(None, ge=1),
    limit: int = Query(50, ge=1, le=500),
    fragment: Literal["rows"] | None = None,
) -> Response:
    query = read_query(request.query_params, user)
    page = None
    if query.filter is not None:
        page = list_jobs(user=user, filters=query.filter, cursor=cursor, limit=limit)
    with user.environment(readonly=True) as env:
        user_ids = sorted({job.user_id for job in page.items if job.user_id}) if page else []
        names = dict(zip(user_ids, env["res.users"].browse(user_ids).mapped("name"), strict=True))
        choices = _choices(env, user) if fragment is None else {}
    context = {
        "query": query,
        "jobs": page.items if page else [],
        "next_url": (
            query.url(cursor=page.next_cursor, limit=limit) if page and page.next_cursor else None
        ),
        "first_url": query.url(limit=limit) if cursor else None,
        "user_names": names,
        "choices": choices,
        "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "rows_url": query.url(fragment="rows", **({"cursor": cursor} if cursor else {})),
    }
    if fragment == "rows":
        return render(request, "llm_dashboard/_job_rows.html", **context)
    return render(
        request, "llm_dashboard/jobs.html", status_code=422 if query.errors else 200, **context
    )


def _done_page(request: Request, action: Action, outcome, back: str) -> Response:
    return render(
        request,
        "llm_dashboard/bulk_done.html",
        action=action,
        verb=VERBS[action],
        outcome=outcome,
        back=safe_next(back),
    )


@router.post("/web/jobs/bulk")
def bulk_selected(
    request: Request,
    user: PageUser,
    action: Annotated[Action, Form()],
    ids: Annotated[list[int], Form(max_length=BULK_LIMIT)] = [],  # noqa: B006 (FastAPI copies)
    back: Annotated[str, Form(max_length=4096)] = "/web/jobs",
) -> Response:
    """Cancel or retry the jobs ticked in the list."""
    if not ids:
        return render(
            request,
            "llm_dashboard/bulk_done.html",
            status_code=400,
            action=action,
            verb=VERBS[action],
            outcome=None,
            back=safe_next(back),
        )
    outcome = bulk_action(action=action, body=BulkIn(ids=ids), user=user)
    return _done_page(request, action, outcome, back)


def _confirm_page(request: Request, action: Action, query: JobQuery, matched: int) -> Response:
    return render(
        request,
        "llm_dashboard/bulk_confirm.html",
        status_code=422 if query.errors else 200,
        action=action,
        verb=VERBS[action],
        query=query,
        matched=matched,
        limit=BULK_LIMIT,
    )


@router.get("/web/jobs/bulk/confirm")
def bulk_confirm(request: Request, user: PageUser, action: Action) -> Response:
    """How many jobs match the filters (the bulk API's dry run), and a form to go ahead."""
    query = read_query(request.query_params, user)
    if query.filter is None:
        return _confirm_page(request, action, query, 0)
    dry_run = bulk_action(action=action, body=BulkIn(filter=query.filter, dry_run=True), user=user)
    return _confirm_page(request, action, query, dry_run.matched)


@router.post("/web/jobs/bulk/filter")
async def bulk_filtered(request: Request, user: PageUser) -> Response:
    """Cancel or retry every job matching the filters sent with the confirmation (the form
    repeats the filters of the confirmation page)."""
    form = await request.form()
    action = form.get("action")
    if action not in VERBS:
        raise HTTPException(422, "Invalid input: action (cancel or retry).")
    query = read_query(form, user)
    if query.filter is None:
        return _confirm_page(request, action, query, 0)
    body = BulkIn(filter=query.filter)
    outcome = await run_in_threadpool(bulk_action, action=action, body=body, user=user)
    return _done_page(request, action, outcome, query.url())
