"""``llmjobs workers``: the worker processes, live ones (or all with ``--all``), as the HTTP
API shows them (``worker_out``)."""

from __future__ import annotations

import click

from core.console import json_option, print_json, print_table


@click.command("workers")
@click.option("--all", "include_stopped", is_flag=True, help="Stopped and dead ones too.")
@json_option
@click.pass_obj
def workers(obj, include_stopped: bool, as_json: bool) -> None:
    """Worker processes: host, pid, last beat, slots, running jobs, the queues they serve."""
    from ..controllers.queues import worker_out

    with obj.registry().environment(readonly=True) as env:
        domain = [] if include_stopped else [("is_live", "=", True)]
        found = env["llm.generation.worker"].search(domain, order="id desc")
        rows = [worker_out(worker).model_dump() for worker in found]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["queues"] = row["queues"] or "all"
        row["state"] = "live" if row["live"] else ("stopped" if row["stopped_at"] else "dead")
    columns = [
        ("name", "Name"),
        ("host", "Host"),
        ("pid", "PID"),
        ("started_at", "Started"),
        ("last_beat_at", "Last beat"),
        ("slots", "Slots"),
        ("running_jobs", "Running"),
        ("queues", "Queues"),
    ]
    if include_stopped:
        columns.insert(3, ("state", "State"))
    print_table(
        rows,
        columns,
        empty="No live worker: start one with `llmjobs worker` (queued jobs wait until then)."
        if not include_stopped
        else "No worker has run on this database yet: start one with `llmjobs worker`.",
    )
