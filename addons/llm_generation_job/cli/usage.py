"""``llmjobs usage``: tokens and cost from the usage ledger, per day, user, provider, model,
thread or job, as the database's superuser (every user's usage).

The report is the HTTP API's (``usage_report``, ``GET /api/usage``); ``--json`` prints it
as the API answers it.
"""

from __future__ import annotations

import datetime as dt

import click

from addons.llm_thread.cli import lookup
from core.console import json_option, print_json, print_table
from core.exceptions import ValidationError

from .jobs import MOMENT

HEADERS = {
    "day": "Day (UTC)",
    "user": "User",
    "provider": "Provider",
    "model": "Model",
    "thread": "Thread",
    "job": "Job",
}


def _row(group: dict, cost) -> dict:
    """A group (or the totals) with the cells a person reads."""
    return {
        **group,
        "cost_text": cost(group["cost"]),
        "estimated_text": group["estimated_attempts"] or None,
    }


def _columns(by: str) -> list[tuple[str, str]]:
    key = [] if by == "day" else [("key", "ID")]
    return [
        ("label", HEADERS[by]),
        *key,
        ("attempts", "Attempts"),
        ("prompt_tokens", "Prompt tokens"),
        ("cached_tokens", "Cached"),
        ("completion_tokens", "Completion tokens"),
        ("estimated_text", "Estimated"),
        ("cost_text", "Cost (USD)"),
    ]


@click.command()
@click.option(
    "--by",
    type=click.Choice(list(HEADERS)),
    default="day",
    show_default=True,
    help="What each row sums.",
)
@click.option("--since", type=MOMENT, help="ISO 8601, or a time ago: 7d (default: 30 days ago).")
@click.option("--until", type=MOMENT, help="ISO 8601, or a time ago (default: now).")
@click.option("--provider", metavar="NAME_OR_ID", help="Only this provider's usage.")
@click.option("--user", metavar="LOGIN_OR_ID", help="Only this user's usage.")
@json_option
@click.pass_obj
def usage(
    obj,
    by: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    provider: str | None,
    user: str | None,
    as_json: bool,
) -> None:
    """Tokens and cost of the attempts that ended in the period (every user's), per day,
    user, provider, model, thread or job; estimated tokens (the provider reported none) are
    counted in their column."""
    from ..controllers.usage import format_cost, usage_report

    with obj.registry().environment(readonly=True) as env:
        provider_id = lookup.provider(env, provider).id if provider else None
        user_id = lookup.user(env, user).id if user else None
        try:
            report = usage_report(env, by, since, until, provider_id, user_id).model_dump()
        except ValidationError as error:
            raise click.BadParameter(error.message, param_hint="--since/--until") from None
    if as_json:
        print_json(report)
        return
    rows = [_row(group, format_cost) for group in report["groups"]]
    if rows:
        rows.append(_row({**report["totals"], "label": "Total", "key": None}, format_cost))
    print_table(
        rows,
        _columns(by),
        title=f"Usage from {report['since']:%Y-%m-%d %H:%M} to {report['until']:%Y-%m-%d %H:%M} "
        f"UTC, by {by}",
        empty="No usage in this period.",
    )
