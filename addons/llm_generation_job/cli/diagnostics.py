"""``llmjobs diagnostics``: is the system healthy, and if not, why (monitoring.diagnose).

It prints the live workers, the queues with their backlog, the stuck jobs with why each is
stuck and what fixes it, failure rates per provider and model, and (``--show-errors``) the
recurring errors, grouped; then the problems found. ``--fix-stuck`` takes back what dead
workers left and requeues overdue retries (monitoring.fix_stuck), says what it did, and
diagnoses again; ``--cleanup-old`` deletes the finished jobs older than a week (the cleanup
cron's ``cleanup_old_jobs``). The exit status is 1 when problems remain, 0 when healthy: for
monitoring scripts. ``--json`` prints the diagnosis as one object (with ``fixed`` and
``deleted_jobs`` when asked).
"""

from __future__ import annotations

import math

import click

from core.console import is_terminal, json_option, print_json, print_table, text

from .. import monitoring

CLEANUP_DAYS = 7  # as the cleanup cron of cron.yaml
MAX_WINDOW_HOURS = 24 * 31  # as the HTTP API's /api/diagnostics


def _not_nan(ctx: click.Context, param: click.Parameter, hours: float) -> float:
    if math.isnan(hours):  # NaN passes every range check
        raise click.BadParameter("nan is not a number of hours.", ctx, param)
    return hours


@click.command("diagnostics")
@click.option("--show-errors", is_flag=True, help="Also list the recurring errors, grouped.")
@click.option(
    "--fix-stuck",
    is_flag=True,
    help="Requeue (or fail, when out of retries) the jobs of dead workers and the overdue "
    "retries, then diagnose again.",
)
@click.option(
    "--cleanup-old",
    is_flag=True,
    help=f"Delete the finished jobs older than {CLEANUP_DAYS} days (and older stream logs).",
)
@click.option(
    "--errors-since-hours",
    type=click.FloatRange(min=0, max=MAX_WINDOW_HOURS, min_open=True),
    callback=_not_nan,
    default=24,
    show_default=True,
    help="The window of the failure rates and recurring errors.",
)
@json_option
@click.pass_obj
def diagnostics(
    obj,
    show_errors: bool,
    fix_stuck: bool,
    cleanup_old: bool,
    errors_since_hours: float,
    as_json: bool,
) -> None:
    """Workers, queues, stuck jobs and failure rates; exit status 1 when there are problems."""
    registry = obj.registry()
    with registry.environment(readonly=True) as env:
        found = monitoring.diagnose(env, errors_since_hours=errors_since_hours)
    if not as_json:
        _print_diagnosis(found, show_errors)
    extra = {}
    if fix_stuck:
        with registry.environment() as env:
            done = monitoring.fix_stuck(env)
        extra["fixed"] = done
        if not as_json:
            _section("Fixed")
            click.echo("\n".join(done) if done else "Nothing to fix.")
        with registry.environment(readonly=True) as env:
            found = monitoring.diagnose(env, errors_since_hours=errors_since_hours)
        if not as_json:
            _section("After fixing")
            _print_problems(found["problems"])
    if cleanup_old:
        with registry.environment() as env:
            deleted = env["llm.generation.job"].cleanup_old_jobs(days=CLEANUP_DAYS)
        extra["deleted_jobs"] = deleted
        if not as_json:
            _section("Cleanup")
            click.echo(
                f"Deleted {deleted} finished job(s) created more than {CLEANUP_DAYS} days ago."
            )
    if as_json:
        print_json({**found, **extra})
    if found["problems"]:
        raise SystemExit(1)


def _section(title: str) -> None:
    click.echo()
    click.secho(title, bold=is_terminal())


def _print_diagnosis(found: dict, show_errors: bool) -> None:
    _section(f"Workers: {found['workers_alive']} live")
    print_table(
        found["workers"],
        [
            ("name", "Name"),
            ("last_beat_at", "Last beat"),
            ("slots", "Slots"),
            ("running_jobs", "Running"),
        ],
        empty="No live worker: start one with `llmjobs worker`.",
    )
    _section("Queues")
    queues = [
        {
            **queue,
            "load": f"{queue['running']}/{queue['limit']}",
            "oldest": _age(queue["oldest_queued_age_seconds"]),
        }
        for queue in found["queues"]
    ]
    print_table(
        queues,
        [
            ("name", "Queue"),
            ("health", "Health"),
            ("backlog", "Backlog"),
            ("load", "Running"),
            ("oldest", "Oldest queued"),
            ("live_workers", "Workers"),
        ],
        empty="No queues yet (one is created with its provider's first job).",
    )
    _section("Stuck jobs")
    print_table(
        found["stuck"],
        [
            ("id", "Job"),
            ("state", "State"),
            ("provider_name", "Provider"),
            ("worker", "Worker"),
            ("reason", "Why"),
            ("fix", "--fix-stuck"),
        ],
        empty="None.",
    )
    _section("Failure rates")
    rates = [{**rate, "percent": f"{rate['rate']:.1f}%"} for rate in found["failure_rates"]]
    print_table(
        rates,
        [
            ("provider_name", "Provider"),
            ("model_name", "Model"),
            ("finished", "Finished"),
            ("failed", "Failed"),
            ("percent", "Failure rate"),
        ],
        empty="No job finished in the window.",
    )
    if show_errors:
        _section("Recurring errors")
        print_table(
            found["recurring_errors"],
            [
                ("count", "Count"),
                ("provider_name", "Provider"),
                ("last_at", "Last"),
                ("example_job_id", "Example job"),
                ("error", "Error"),
            ],
            empty="No failed attempts in the window.",
        )
    _section("Problems")
    _print_problems(found["problems"])


def _print_problems(problems: list[str]) -> None:
    if not problems:
        click.echo("Healthy: no problems found.")
    for problem in problems:
        click.echo(f"- {problem}")


def _age(seconds: float | None) -> str:
    return text(None) if seconds is None else f"{seconds:.0f} s"
