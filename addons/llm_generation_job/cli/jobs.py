"""``llmjobs jobs list|show|retry|cancel``: generation jobs, as the database's superuser.

The filters are the HTTP API's (``JobFilter``), with providers, models and users named as an
operator knows them (a name or login, or an id), and dates as ISO 8601 or a time ago
(``2h``). What is shown comes from the API's own builders (``job_out``, ``job_detail``), so
the command line and the API agree. Retry and cancel go through the job's actions, each job
on its own (one refusal does not stop the others), and say what happened to each; the exit
status is 1 when any was refused.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import click
from pydantic import ValidationError as PydanticValidationError

from addons.llm_thread.cli import lookup
from core.console import json_option, print_json, print_record, print_table, text
from core.exceptions import UserError

from ..job_filter import JobFilter
from ..models.llm_generation_job import STATES

JOB = "llm.generation.job"
BATCH = 200  # jobs acted on per transaction (short ones: SQLite has one writer at a time)
LISTED_OUTCOMES = 50  # beyond this many jobs, only refusals are listed one by one
ERROR_WIDTH = 60
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PAST = {"retry": "Retried", "cancel": "Cancelled"}


class Moment(click.ParamType):
    """A date and time in ISO 8601 (UTC unless it says otherwise), or a time ago: ``90s``,
    ``15m``, ``2h``, ``7d``, ``1w``."""

    name = "moment"

    def convert(self, value: Any, param, ctx) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        ago = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value.strip())
        if ago:
            seconds = float(ago.group(1)) * _UNITS[ago.group(2)]
            try:
                return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
            except OverflowError:
                self.fail(f"'{value}' reaches back further than dates go.", param, ctx)
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(
                f"'{value}' is neither a date and time in ISO 8601 (2026-01-31, "
                "2026-01-31T08:00, 2026-01-31T08:00:00+02:00; UTC unless it says) nor a time "
                "ago (30m, 2h, 7d).",
                param,
                ctx,
            )
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


MOMENT = Moment()


def filter_options(command):
    """The job list's filters as options (the values reach the command as keywords)."""
    states = [state for state, _label in STATES]
    options = [
        click.option(
            "--state", "states", multiple=True, type=click.Choice(states), help="Repeatable."
        ),
        click.option("--provider", metavar="NAME_OR_ID"),
        click.option("--model", metavar="NAME_OR_ID"),
        click.option("--user", metavar="LOGIN_OR_ID", help="Whose jobs."),
        click.option("--thread", type=click.IntRange(min=1), metavar="ID"),
        click.option("--created-after", type=MOMENT, help="ISO 8601, or a time ago: 2h, 7d."),
        click.option("--created-before", type=MOMENT),
        click.option("--finished-after", type=MOMENT),
        click.option("--finished-before", type=MOMENT),
        click.option("-q", "--search", metavar="TEXT", help="Text in the job's error."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


FILTER_NAMES = (
    "states",
    "provider",
    "model",
    "user",
    "thread",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
    "search",
)


def job_filter(env, options: dict[str, Any]) -> JobFilter:
    """The JobFilter of the filter options, names resolved to ids (ClickException when a
    name matches nothing)."""
    provider = lookup.provider(env, options["provider"]) if options["provider"] else None
    model = None
    if options["model"]:
        model = (
            lookup.model(env, provider, options["model"])
            if provider
            else lookup.model_anywhere(env, options["model"])
        )
    try:
        return JobFilter(
            state=list(options["states"]) or None,
            provider_id=provider.id if provider else None,
            model_id=model.id if model else None,
            user_id=lookup.user(env, options["user"]).id if options["user"] else None,
            thread_id=options["thread"],
            created_after=options["created_after"],
            created_before=options["created_before"],
            finished_after=options["finished_after"],
            finished_before=options["finished_before"],
            q=options["search"],
        )
    except PydanticValidationError as error:
        problem = error.errors()[0]
        where = "--search" if problem["loc"] == ("q",) else f"--{problem['loc'][0]}"
        raise click.BadParameter(problem["msg"], param_hint=where) from None


def _filters(options: dict[str, Any]) -> dict[str, Any]:
    return {name: options.pop(name) for name in FILTER_NAMES}


def _first_line(value: str | None, width: int = ERROR_WIDTH) -> str | None:
    if not value:
        return None
    line = value.strip().splitlines()[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def _job(env, job_id: int):
    job = env[JOB].browse(job_id).exists()
    if not job:
        raise click.ClickException(
            f"No generation job has the id {job_id} (`llmjobs jobs list` shows them)."
        )
    return job


@click.group()
def jobs() -> None:
    """Generation jobs: list with filters, show one, retry or cancel."""


@jobs.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option(
    "--cursor",
    type=click.IntRange(min=1),
    metavar="ID",
    help="The next page: jobs older than this id (the previous page says which).",
)
@json_option
@click.pass_obj
def jobs_list(obj, limit: int, cursor: int | None, as_json: bool, **options) -> None:
    """Jobs, newest first, with the HTTP API's filters."""
    from ..controllers.jobs import job_out

    filters = _filters(options)
    with obj.registry().environment(readonly=True) as env:
        domain = job_filter(env, filters).domain()
        if cursor is not None:
            domain.append(("id", "<", cursor))
        found = env[JOB].search(domain, order="id desc", limit=limit)
        rows = [
            {
                **job_out(job).model_dump(),
                "model_name": job.model_id.name or None,
                "user_login": job.user_id.login or None,
            }
            for job in found
        ]
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    if as_json:
        print_json({"items": rows, "next_cursor": next_cursor})
        return
    for row in rows:
        row["retries"] = f"{row['retry_count']}/{row['max_retries']}"
        row["error"] = _first_line(row["error_message"])
    print_table(
        rows,
        [
            ("id", "ID"),
            ("state", "State"),
            ("provider_name", "Provider"),
            ("model_name", "Model"),
            ("user_login", "User"),
            ("thread_id", "Thread"),
            ("created_at", "Created"),
            ("completed_at", "Finished"),
            ("retries", "Retries"),
            ("error", "Error"),
        ],
        empty="No jobs match.",
    )
    if next_cursor is not None:
        click.echo(f"More: --cursor {next_cursor}", err=True)


@jobs.command("show")
@click.argument("job_id", type=click.IntRange(min=1))
@json_option
@click.pass_obj
def jobs_show(obj, job_id: int, as_json: bool) -> None:
    """One job: inputs, prompt and reply, error, and the timeline of its attempts."""
    from ..controllers.jobs import job_detail

    with obj.registry().environment(readonly=True) as env:
        job = _job(env, job_id)
        detail = job_detail(job).model_dump()
        names = {
            "model": job.model_id.name or None,
            "user": job.user_id.login or None,
            "thread": f"{job.thread_id.id} ({job.thread_id.name})",
        }
    if as_json:
        print_json(detail)
        return
    prompt, reply = detail["input_message"], detail["output_message"]
    record = {
        **detail,
        **names,
        "retries": f"{detail['retry_count']} of {detail['max_retries']}",
        "actions": [name for name in ("cancel", "retry") if detail[f"can_{name}"]],
        "inputs": json.dumps(detail["generation_inputs"]) if detail["generation_inputs"] else None,
        "prompt": prompt["body"] if prompt else None,
        "reply": f"[{reply['state']}] {reply['body']}" if reply else None,
        "usage": _usage(detail["usage"], reply),
        "provider_job": _provider_job(detail["provider_job"]),
    }
    print_record(
        record,
        [
            ("id", "Job"),
            ("state", "State"),
            ("provider_name", "Provider"),
            ("model", "Model"),
            ("user", "User"),
            ("thread", "Thread"),
            ("priority", "Priority"),
            ("execution_mode", "Runs as"),
            ("provider_job", "At provider"),
            ("retries", "Retries"),
            ("created_at", "Created"),
            ("queued_at", "Queued"),
            ("started_at", "Started"),
            ("completed_at", "Finished"),
            ("queue_seconds", "Waited (s)"),
            ("duration_seconds", "Ran (s)"),
            ("next_retry_at", "Next retry"),
            ("error_kind", "Error kind"),
            ("error_message", "Error"),
            ("actions", "Can"),
            ("inputs", "Inputs"),
            ("prompt", "Prompt"),
            ("reply", "Reply"),
            ("usage", "Usage"),
        ],
        title=f"Generation job {detail['id']}: {detail['name']}",
        extra=lambda: _print_attempts(
            detail["attempts"], priced=bool(detail["usage"] and detail["usage"]["priced"])
        ),
    )


def _provider_job(found: dict | None) -> str | None:
    """A job's batch or background response, as one line."""
    if not found:
        return None
    if found["kind"] == "response":
        cursor = f", logged through event {found['cursor']}" if found["cursor"] else ""
        return f"background response {found['id']}{cursor}"
    counts = ", ".join(f"{count} {name}" for name, count in found["request_counts"].items())
    polled = found["last_polled_at"]
    parts = [
        f"batch {found['id'] or '(being submitted)'}",
        found["provider_status"] or found["state"],
        counts,
        f"last polled {polled:%Y-%m-%d %H:%M:%S}" if polled else "",
        found["error"] or "",
    ]
    return " · ".join(part for part in parts if part)


def _usage(spent: dict | None, reply: dict | None) -> str | None:
    """What the job spent (its ledger rows; the reply's tokens before any attempt ended), as
    one line: tokens, the reply's finish reason, and the cost when its model has prices (else
    the cost is unknown, not 0)."""
    finish = f", finish: {reply['finish_reason']}" if reply and reply["finish_reason"] else ""
    if spent is None:
        if not reply or not (reply["prompt_tokens"] or reply["completion_tokens"]):
            return None
        return f"{reply['prompt_tokens']} tokens in, {reply['completion_tokens']} out{finish}"
    from ..controllers.usage import format_cost

    cached = f" ({spent['cached_tokens']} cached)" if spent["cached_tokens"] else ""
    estimated = " (estimated)" if spent["estimated"] else ""
    cost = f", cost {format_cost(spent['cost'])}" if spent["priced"] else ""
    return (
        f"{spent['prompt_tokens']} tokens in{cached}, {spent['completion_tokens']} out"
        f"{estimated}{finish}{cost}"
    )


def _print_attempts(attempts: list[dict], priced: bool) -> None:
    """The attempt timeline; their costs when the job's model has prices."""
    from ..controllers.usage import format_cost

    click.echo()
    rows = [
        {
            **attempt,
            "tokens": (
                f"{attempt['prompt_tokens']}/{attempt['completion_tokens']}"
                + (" (estimated)" if attempt["estimated"] else "")
                if attempt["completion_tokens"] is not None
                else None
            ),
            "cost_text": format_cost(attempt["cost"])
            if priced and attempt["cost"] is not None
            else None,
            "error": _first_line(attempt["error_message"], 80),
        }
        for attempt in attempts
    ]
    print_table(
        rows,
        [
            ("number", "#"),
            ("worker", "Worker"),
            ("started_at", "Started"),
            ("first_token_at", "First token"),
            ("ended_at", "Ended"),
            ("outcome", "Outcome"),
            ("duration_seconds", "Seconds"),
            ("tokens", "Tokens in/out"),
            ("cost_text", "Cost (USD)"),
            ("error", "Error"),
        ],
        title="Attempts",
        empty="Attempts: none yet.",
    )


# -- retry and cancel --------------------------------------------------------------------------
def _action_command(action: str, summary: str):
    @jobs.command(action, help=summary)
    @click.argument("job_ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
    @click.option(
        "--all-matching",
        is_flag=True,
        help="Every job the filters match (how many is confirmed first).",
    )
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
    @filter_options
    @json_option
    @click.pass_obj
    def command(obj, job_ids: tuple[int, ...], all_matching: bool, yes: bool, as_json, **options):
        registry = obj.registry()
        ids = _selected(registry, action, job_ids, all_matching, _filters(options))
        if not ids:
            if as_json:
                print_json({"matched": 0, "done": 0, "refused": []})
            else:
                click.echo("No jobs match these filters: nothing to do.")
            return
        if (
            all_matching
            and not yes
            and not _confirmed(f"{len(ids)} job(s) match: {action} them all?")
        ):
            click.echo("Nothing done.", err=True)
            raise SystemExit(1)
        done, refused = _act(registry, action, ids, as_json)
        if as_json:
            print_json({"matched": len(ids), "done": done, "refused": refused})
        elif len(ids) > 1:
            click.echo(f"{_PAST[action]} {done} of {len(ids)} job(s); {len(refused)} refused.")
        if refused:
            raise SystemExit(1)

    return command


def _confirmed(question: str) -> bool:
    """The operator's answer (no answer, as when stdin ends, is no)."""
    try:
        return click.confirm(question, err=True)
    except click.Abort:
        click.echo("\nNo answer (--yes acts without asking).", err=True)
        return False


def _selected(
    registry, action: str, job_ids: Sequence[int], all_matching: bool, filters: dict
) -> list[int]:
    """The ids to act on: those given, or all that the filters match."""
    filtering = [name for name, value in filters.items() if value not in (None, ())]
    if job_ids and all_matching:
        raise click.UsageError("Give job ids, or --all-matching with filters, not both.")
    if not job_ids and not all_matching:
        raise click.UsageError(
            f"Name the jobs to {action}: their ids, or --all-matching with filters "
            "(e.g. --all-matching --state failed --provider NAME)."
        )
    if filtering and not all_matching:
        raise click.UsageError(
            "Filters select jobs only with --all-matching; with ids, give the ids alone."
        )
    if job_ids:
        return list(dict.fromkeys(job_ids))
    with registry.environment(readonly=True) as env:
        return env[JOB].search(job_filter(env, filters).domain(), order="id").ids


def _act(registry, action: str, ids: list[int], quiet: bool) -> tuple[int, list[dict]]:
    """Apply ``action`` to each job on its own, a transaction per batch; returns how many were
    done and the refusals. Says what happened to each (past LISTED_OUTCOMES jobs, to the
    refused ones only)."""
    done, refused = 0, []
    listed = len(ids) <= LISTED_OUTCOMES
    for batch in _batches(ids, BATCH):
        with registry.environment() as env:
            for job_id in batch:
                job = env[JOB].browse(job_id).exists()
                try:
                    if not job:
                        raise UserError(f"No generation job has the id {job_id}.")
                    with env.cr.savepoint():
                        getattr(job, f"action_{action}")()
                except UserError as error:
                    refused.append({"id": job_id, "reason": error.message})
                    if not quiet:
                        click.echo(error.message, err=True)
                    continue
                done += 1
                if listed and not quiet:
                    click.echo(f"Job {job_id}: {_outcome(job, action)}")
    return done, refused


def _outcome(job, action: str) -> str:
    job.invalidate_recordset()
    if action == "retry":
        return f"queued again (retry {job.retry_count} of {job.max_retries})."
    if job.state == "running":
        return "cancel requested: its worker stops the stream and keeps the partial reply."
    return text(job.state) + "."


def _batches(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


jobs_retry = _action_command(
    "retry", "Queue failed jobs again (a new attempt each), if they have retries left."
)
jobs_cancel = _action_command(
    "cancel",
    "Cancel queued or running jobs, or failed ones waiting for their automatic retry (a "
    "running stream stops; its partial reply is kept, marked cancelled).",
)
