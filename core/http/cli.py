"""``llmjobs serve``: the HTTP API (and the addons' pages) under uvicorn."""

from __future__ import annotations

from pathlib import Path

import click

from core.cron.cli import cron_file_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8069, show_default=True, help="Port to listen on.")
@click.option(
    "--with-worker",
    is_flag=True,
    help="Also run a worker in this process (crons and job runner): one command for a "
    "single machine.",
)
@cron_file_option
@click.pass_obj
def serve(obj, host: str, port: int, with_worker: bool, cron_file: Path | None):
    """Serve the JSON API, its OpenAPI document (/openapi.json, /docs) and /metrics."""
    import uvicorn

    from core.worker import when_reachable, worker_services

    from .app import create_app

    registry = when_reachable(obj.registry, "the registry")
    services = worker_services(registry, cron_file) if with_worker else []
    click.echo(f"Serving on http://{host}:{port} (API documentation at /docs)", err=True)
    uvicorn.run(create_app(registry, services), host=host, port=port, log_config=None)
