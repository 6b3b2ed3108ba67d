"""The ``llmjobs`` command line.

Core commands live here; an addon adds its own by exposing ``commands`` (a list of click
commands) in ``addons/<addon>/cli.py`` or its ``cli/`` package. Commands that need the
database get the registry from the context object (``ctx.obj.registry()``), built from
``--db-url`` / ``LLMJOBS_DB_URL`` and the project's addons plus the extra folders of
``LLMJOBS_ADDONS_PATH`` and ``--addons-path`` (whose addons' commands are mounted too). A
broken addon folder or command file, like any expected error, is one ``Error: ...`` line and
exit status 1.

Logging goes to stderr, at WARNING (``-v`` INFO, ``-vv`` DEBUG). The HTTP libraries' debug
lines (which may quote headers) stay at INFO, and every secret the process handles is
redacted from what is logged (core.redaction).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from . import addons as addon_loader
from .config import database_url
from .cron.cli import cron, cron_file_option, worker
from .exceptions import DatabaseUnavailable, RegistryError, UserError
from .redaction import RedactingFilter

# Third-party loggers whose debug lines can carry request headers.
QUIET_LOGGERS = ("httpcore", "hpack", "h11")


@dataclass
class CliContext:
    db_url: str | None
    extra_addons: list[str]
    _registry: object = field(default=None, repr=False)

    @property
    def addons_path(self) -> list[Path | str]:
        return [addon_loader.PROJECT_ADDONS_DIR, *self.extra_addons]

    def registry(self):
        """The registry, built on first use (loads addons, syncs the schema)."""
        if self._registry is None:
            from .registry import Registry

            self._registry = Registry(self.db_url, addons_path=self.addons_path)
        return self._registry


def _addons_path_from_env() -> list[str]:
    value = os.environ.get("LLMJOBS_ADDONS_PATH")
    return [p for p in value.split(os.pathsep) if p] if value else []


def _addons_path_from_argv(argv: Sequence[str]) -> list[str]:
    """The ``--addons-path`` values among the main group's options (before the command):
    addon commands must be mounted before click parses the command line."""
    found: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--addons-path":
            value = next(args, None)
            if value is not None:
                found.append(value)
        elif arg.startswith("--addons-path="):
            found.append(arg.partition("=")[2])
        elif arg == "--db-url":
            next(args, None)
        elif not arg.startswith("-"):
            break  # the command: what follows is its own
    return found


def _setup_logging(verbose: int) -> None:
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db-url",
    envvar="LLMJOBS_DB_URL",
    default=None,
    help="Database URL (default: sqlite:///<LLMJOBS_HOME>/llmjobs.db, LLMJOBS_HOME being "
    "var/ in the project folder).",
)
@click.option(
    "--addons-path",
    multiple=True,
    type=click.Path(file_okay=False),
    help="An extra addon folder, added to the project's addons/ (repeatable; also "
    "LLMJOBS_ADDONS_PATH).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, db_url: str | None, addons_path: tuple[str, ...], verbose: int):
    """Durable LLM generation jobs on an Odoo-style addon framework."""
    _setup_logging(verbose)
    ctx.obj = CliContext(database_url(db_url), [*_addons_path_from_env(), *addons_path])


@main.command()
@click.pass_obj
def init(obj: CliContext):
    """Create or update the database schema for every installed addon."""
    registry = obj.registry()
    click.echo(f"Database: {registry.engine.url.render_as_string(hide_password=True)}")
    click.echo(f"Addons:   {', '.join(registry.addons)}")
    click.echo(f"Models:   {len(registry.models)}; tables are up to date.")


@main.group()
def user():
    """Manage users."""


@user.command("create")
@click.option("--login", required=True)
@click.option("--name", default=None, help="Display name (default: the login).")
@click.option(
    "--group", "groups", multiple=True, help="Group external id, e.g. base.group_user (repeatable)."
)
@click.option("--password", default=None, help="Prompted for when not given.")
@click.pass_obj
def user_create(
    obj: CliContext, login: str, name: str | None, groups: tuple[str, ...], password: str | None
):
    """Create a user."""
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with obj.registry().environment() as env:
        group_ids = [env.ref(xml_id).id for xml_id in groups or ("base.group_user",)]
        new_user = env["res.users"].create(
            {"login": login, "name": name or login, "groups_id": group_ids}
        )
        new_user.set_password(password)
        click.echo(f"Created user {login} (id {new_user.id}).")


@main.command()
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
def serve(obj: CliContext, host: str, port: int, with_worker: bool, cron_file: Path | None):
    """Serve the JSON API, its OpenAPI document (/openapi.json, /docs) and /metrics."""
    import uvicorn  # the web stack loads for this command only

    from .http import create_app
    from .worker import when_reachable, worker_services

    registry = when_reachable(obj.registry, "the registry")
    services = worker_services(registry, cron_file) if with_worker else []
    click.echo(f"Serving on http://{host}:{port} (API documentation at /docs)", err=True)
    uvicorn.run(create_app(registry, services), host=host, port=port, log_config=None)


main.add_command(worker)
main.add_command(cron)


def _mount_addon_commands(extra_addons: list[str]) -> None:
    """Add the ``commands`` of every addon's ``cli.py`` (or ``cli/`` package) to the main
    group."""
    folders = addon_loader.addon_search_path([addon_loader.PROJECT_ADDONS_DIR, *extra_addons])
    addon_loader.extend_import_path(folders)
    for folder in folders:
        found = [*Path(folder).glob("*/cli.py"), *Path(folder).glob("*/cli/__init__.py")]
        for cli_file in sorted(found):
            addon = cli_file.parent if cli_file.name == "cli.py" else cli_file.parent.parent
            if not (addon / "__manifest__.py").exists():
                continue
            try:
                module = importlib.import_module(f"addons.{addon.name}.cli")
            except Exception as exc:
                where = f", line {exc.lineno}" if isinstance(exc, SyntaxError) else ""
                raise RegistryError(
                    f"Addon '{addon.name}': its command file {cli_file} cannot be "
                    f"loaded ({type(exc).__name__}: {getattr(exc, 'msg', exc)}{where})."
                ) from None
            for command in getattr(module, "commands", ()):
                main.add_command(command)


def run() -> None:
    """Entry point: turn expected errors into one clear line and exit status 1."""
    try:
        _mount_addon_commands([*_addons_path_from_env(), *_addons_path_from_argv(sys.argv[1:])])
        main(standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (RegistryError, UserError, DatabaseUnavailable) as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    except SystemExit:
        raise
