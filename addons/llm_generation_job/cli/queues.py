"""``llmjobs queues list|set|pause|resume``: the per-provider queues, as the database's
superuser.

A queue is named by its provider's name or by the queue's id. The data is the HTTP API's
(``queue_out``) and the limits its (``QueuePatch``); changes go through the queue's own
``write``, ``action_disable`` and ``action_enable`` (resuming wakes the workers).
"""

from __future__ import annotations

import click
from pydantic import ValidationError as PydanticValidationError

from addons.llm_thread.cli.lookup import listing
from core.console import json_option, print_json, print_record, print_table

QUEUE = "llm.generation.queue"
# QueuePatch's fields and the options that set them.
OPTIONS = {
    "max_concurrent_jobs": "--limit",
    "auto_retry_failed": "--auto-retry/--no-auto-retry",
    "retry_delay_minutes": "--retry-delay",
    "attempt_deadline_seconds": "--attempt-deadline",
    "execution_mode": "--execution-mode",
    "batch_unattended": "--batch-unattended/--no-batch-unattended",
    "batch_max_size": "--batch-max-size",
    "batch_max_wait_seconds": "--batch-max-wait",
    "batch_requeue_unfinished": "--batch-requeue-unfinished/--no-batch-requeue-unfinished",
    "rpm_limit": "--rpm",
    "tpm_limit": "--tpm",
    "breaker_threshold": "--cooldown-after",
    "breaker_cooldown_seconds": "--cooldown",
    "fair_share": "--fair-share",
    "adaptive_concurrency": "--adaptive/--no-adaptive",
    "min_concurrency": "--min-concurrency",
}


def find_queue(env, name_or_id: str):
    """The queue of the provider of that name (created with the defaults if the provider has
    none yet), else the queue of that id."""
    queues = env[QUEUE]
    provider = env["llm.provider"].search([("name", "=", name_or_id)], limit=1)
    if provider:
        return queues._get_or_create_queue(provider.id)
    if name_or_id.isdigit():
        found = queues.browse(int(name_or_id)).exists()
        if found:
            return found
    names = queues.search([]).mapped("provider_id.name")
    known = f"the queues are those of {listing(names)}" if names else "there is no queue yet"
    raise click.ClickException(
        f"No queue is named '{name_or_id}' (a provider's name) or has that id: {known} "
        "(`llmjobs queues list`)."
    )


def _age(seconds: float) -> str | None:
    if not seconds:
        return None
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def _display(queue: dict) -> dict:
    """A queue_out row with the cells a person reads."""
    counts, performance = queue["job_counts"], queue["performance"]
    rate = performance["success_rate"]  # 0 when none finished in the window: say nothing then
    if not rate and not counts.get("failed"):
        rate = None
    in_workers = counts.get("running", 0) - queue["batch_jobs"]
    return {
        **queue,
        "queue": queue["provider_name"],
        "backlog": counts.get("queued", 0),
        "running": f"{in_workers}/{queue['concurrency_now']}"
        + (
            f" (adaptive, {queue['min_concurrency']}-{queue['max_concurrent_jobs']})"
            if queue["adaptive_concurrency"]
            else ""
        ),
        "limits": ", ".join(
            part
            for part in (
                f"{queue['rpm_limit']} rpm" if queue["rpm_limit"] else "",
                f"{queue['tpm_limit']} tpm" if queue["tpm_limit"] else "",
                "fair share" if queue["fair_share"] == "user" else "",
            )
            if part
        )
        or None,
        "waiting": queue["waiting_reason"],
        "spent": f"${queue['usage']['cost']:.4f}" if queue["usage"]["cost"] else None,
        "oldest": _age(performance["oldest_queued_age"]),
        "success": f"{rate:.0f}%" if rate is not None else None,
        "failed": counts.get("failed", 0),
        "retry": (
            f"auto, {queue['retry_delay_minutes']} min" if queue["auto_retry_failed"] else "off"
        ),
        "deadline": f"{queue['attempt_deadline_seconds']:g} s",
        "mode": queue["execution_mode"]
        + (
            f"; unattended in batches (up to {queue['batch_max_size']}, "
            f"{queue['batch_max_wait_seconds']:g} s), {queue['running_batches']} running"
            if queue["batch_unattended"]
            else ""
        ),
    }


COLUMNS = [
    ("queue", "Queue"),
    ("id", "ID"),
    ("health", "Health"),
    ("backlog", "Backlog"),
    ("running", "Running/limit"),
    ("oldest", "Oldest queued"),
    ("live_workers", "Workers"),
    ("success", "Success (24h)"),
    ("failed", "Failed"),
    ("retry", "Retry"),
    ("deadline", "Attempt deadline"),
    ("mode", "Runs jobs"),
    ("limits", "Limits"),
    ("waiting", "Waiting"),
    ("spent", "Spent (24h)"),
]


def _show_one(queue: dict, as_json: bool, done: str) -> None:
    if as_json:
        print_json(queue)
        return
    click.echo(done)
    print_record(_display(queue), COLUMNS)


@click.group()
def queues() -> None:
    """Queues (one per provider): health and backlog; limits, retry policy, pause, resume."""


@queues.command("list")
@json_option
@click.pass_obj
def queues_list(obj, as_json: bool) -> None:
    """Every queue: health, backlog, running against its limit, the oldest queued job's age,
    live workers, and the success rate of the last 24 hours."""
    from ..controllers.queues import queue_out

    with obj.registry().environment(readonly=True) as env:
        rows = [queue_out(queue).model_dump() for queue in env[QUEUE].search([])]
    if as_json:
        print_json(rows)
        return
    print_table(
        [_display(row) for row in rows],
        COLUMNS,
        empty="No queues yet: a provider's queue is made with its first job, or by "
        "`llmjobs queues set PROVIDER ...`.",
    )


@queues.command("set")
@click.argument("name_or_id")
@click.option("--limit", type=int, help="How many of its jobs run at once, across all workers.")
@click.option(
    "--auto-retry/--no-auto-retry",
    default=None,
    help="Retry failed jobs automatically (retryable failures, with backoff).",
)
@click.option("--retry-delay", type=int, metavar="MINUTES", help="The backoff's base.")
@click.option(
    "--attempt-deadline",
    type=float,
    metavar="SECONDS",
    help="An attempt running longer fails (retryably).",
)
@click.option(
    "--execution-mode",
    type=click.Choice(["stream", "background"]),
    help="How replies are generated: streamed, or as OpenAI background responses.",
)
@click.option(
    "--batch-unattended/--no-batch-unattended",
    default=None,
    help="Send jobs nobody follows (interactive=False) in provider batches.",
)
@click.option("--batch-max-size", type=int, metavar="REQUESTS", help="Requests per batch.")
@click.option(
    "--batch-max-wait",
    type=float,
    metavar="SECONDS",
    help="A partial batch goes once its oldest job has waited this long.",
)
@click.option(
    "--batch-requeue-unfinished/--no-batch-requeue-unfinished",
    default=None,
    help="Stream again what a batch never ran (expired, cancelled) instead of failing it.",
)
@click.option("--rpm", type=int, help="Requests a minute, for all workers (0: no limit).")
@click.option("--tpm", type=int, help="Tokens a minute, for all workers (0: no limit).")
@click.option(
    "--cooldown-after",
    type=int,
    metavar="FAILURES",
    help="Retryable failures in a row that cool the provider down (0: never).",
)
@click.option("--cooldown", type=float, metavar="SECONDS", help="How long a cooldown lasts.")
@click.option(
    "--fair-share",
    type=click.Choice(["none", "user"]),
    help="user: the user served the fewest tokens lately goes next.",
)
@click.option(
    "--adaptive/--no-adaptive",
    default=None,
    help="Let the concurrency follow the provider (up to --limit, down to --min-concurrency).",
)
@click.option("--min-concurrency", type=int, help="The adaptive concurrency's floor.")
@json_option
@click.pass_obj
def queues_set(
    obj,
    name_or_id: str,
    limit: int | None,
    auto_retry: bool | None,
    retry_delay: int | None,
    attempt_deadline: float | None,
    execution_mode: str | None,
    batch_unattended: bool | None,
    batch_max_size: int | None,
    batch_max_wait: float | None,
    batch_requeue_unfinished: bool | None,
    rpm: int | None,
    tpm: int | None,
    cooldown_after: int | None,
    cooldown: float | None,
    fair_share: str | None,
    adaptive: bool | None,
    min_concurrency: int | None,
    as_json: bool,
) -> None:
    """Configure the queue NAME_OR_ID (its provider's name, or its id): only what is given
    changes."""
    from ..controllers.queues import QueuePatch, queue_out

    given = {
        "max_concurrent_jobs": limit,
        "auto_retry_failed": auto_retry,
        "retry_delay_minutes": retry_delay,
        "attempt_deadline_seconds": attempt_deadline,
        "execution_mode": execution_mode,
        "batch_unattended": batch_unattended,
        "batch_max_size": batch_max_size,
        "batch_max_wait_seconds": batch_max_wait,
        "batch_requeue_unfinished": batch_requeue_unfinished,
        "rpm_limit": rpm,
        "tpm_limit": tpm,
        "breaker_threshold": cooldown_after,
        "breaker_cooldown_seconds": cooldown,
        "fair_share": fair_share,
        "adaptive_concurrency": adaptive,
        "min_concurrency": min_concurrency,
    }
    try:
        values = QueuePatch(**given).model_dump(exclude_none=True)
    except PydanticValidationError as error:
        problem = error.errors()[0]
        raise click.BadParameter(problem["msg"], param_hint=OPTIONS[problem["loc"][0]]) from None
    if not values:
        raise click.UsageError(f"Nothing to change: give {', '.join(OPTIONS.values())}.")
    with obj.registry().environment() as env:
        queue = find_queue(env, name_or_id)
        queue.write(values)
        row = queue_out(queue).model_dump()
    _show_one(row, as_json, f"Queue '{row['provider_name']}' changed.")


def _switch(obj, name_or_id: str, as_json: bool, enable: bool) -> None:
    from ..controllers.queues import queue_out

    with obj.registry().environment() as env:
        queue = find_queue(env, name_or_id)
        was = queue.enabled
        if enable:
            queue.action_enable()
        else:
            queue.action_disable()
        row = queue_out(queue).model_dump()
    name = row["provider_name"]
    if enable:
        done = f"Queue '{name}' resumed." if not was else f"Queue '{name}' was not paused."
    else:
        done = (
            f"Queue '{name}' paused: it starts no more jobs; running ones finish."
            if was
            else f"Queue '{name}' was paused already."
        )
    _show_one(row, as_json, done)


@queues.command("pause")
@click.argument("name_or_id")
@json_option
@click.pass_obj
def queues_pause(obj, name_or_id: str, as_json: bool) -> None:
    """Start no more jobs from the queue NAME_OR_ID (running ones finish)."""
    _switch(obj, name_or_id, as_json, enable=False)


@queues.command("resume")
@click.argument("name_or_id")
@json_option
@click.pass_obj
def queues_resume(obj, name_or_id: str, as_json: bool) -> None:
    """Start jobs from the queue NAME_OR_ID again (its workers wake at once)."""
    _switch(obj, name_or_id, as_json, enable=True)
