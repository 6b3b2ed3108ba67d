"""``llmjobs worker`` and ``llmjobs cron list|run`` (mounted on the main group by core/cli.py).

They get the registry from the main group's context object (``ctx.obj.registry()``).
"""

from __future__ import annotations

from pathlib import Path

import click

cron_file_option = click.option(
    "--cron-file",
    envvar="LLMJOBS_CRON_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The scheduled actions file (default: cron.yaml at the project root).",
)


@click.command()
@cron_file_option
@click.pass_obj
def worker(obj, cron_file: Path | None):
    """Run the crons and the addons' background services until SIGTERM or Ctrl-C."""
    from ..worker import run_worker, when_reachable

    run_worker(when_reachable(obj.registry, "the registry"), cron_file)


@click.group()
def cron():
    """Scheduled actions (cron.yaml)."""


@cron.command("list")
@cron_file_option
@click.pass_obj
def cron_list(obj, cron_file: Path | None):
    """Check the cron file, then show every scheduled action: schedule, last run and
    failures."""
    from . import load_cron_file

    registry = obj.registry()
    load_cron_file(registry, cron_file)  # a broken file is an error here too, not a surprise
    with registry.environment(readonly=True) as env:
        crons = env["ir.cron"].search([])
        if not crons:
            click.echo("No scheduled actions yet: a worker creates them from cron.yaml.")
        for job in crons:
            state = "" if job.active else "  (inactive)"
            click.echo(
                f"{job.name}{state}\n"
                f"  every {job.interval_number} {job.interval_type}, runs "
                f"{job.model_name}.{job.method} as user {job.user_id.id}\n"
                f"  next {_when(job.nextcall)}  last {_when(job.lastcall)}  "
                f"last success {_when(job.last_success_at)}  failures {job.failure_count}"
            )
            if job.last_error:
                click.echo(f"  last error: {job.last_error.splitlines()[0]}")


@cron.command("run")
@click.argument("name")
@cron_file_option
@click.pass_obj
def cron_run(obj, name: str, cron_file: Path | None):
    """Run the scheduled action NAME once now, whatever its schedule."""
    from . import load_cron_file, run_now, sync_rows

    registry = obj.registry()
    sync_rows(registry, load_cron_file(registry, cron_file))
    outcome = run_now(registry, name)
    if not outcome.ok:
        raise click.ClickException(f"{name} failed after {outcome.duration:.2f}s: {outcome.error}")
    click.echo(f"{name}: done in {outcome.duration:.2f}s")


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "never"
