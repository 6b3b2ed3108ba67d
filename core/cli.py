"""The ``llmjobs`` command line.

Core commands live here; an addon adds its own by exposing ``commands`` (a list of click
commands) in ``addons/<addon>/cli.py``. Commands that need the database get the registry from
the context object (``ctx.obj.registry()``), built from ``--db-url`` / ``LLMJOBS_DB_URL`` and
``--addons-path`` / ``LLMJOBS_ADDONS_PATH``.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import click

from . import addons as addon_loader
from .config import database_url
from .cron.cli import cron, worker
from .exceptions import RegistryError, UserError


@dataclass
class CliContext:
    db_url: str | None
    addons_path: list[str] | None
    _registry: object = field(default=None, repr=False)

    def registry(self):
        """The registry, built on first use (loads addons, syncs the schema)."""
        if self._registry is None:
            from .registry import Registry

            self._registry = Registry(self.db_url, addons_path=self.addons_path)
        return self._registry


def _addons_path_from_env() -> list[str] | None:
    value = os.environ.get("LLMJOBS_ADDONS_PATH")
    return [p for p in value.split(os.pathsep) if p] if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db-url",
    envvar="LLMJOBS_DB_URL",
    default=None,
    help="Database URL (default: sqlite:///var/llmjobs.db).",
)
@click.option(
    "--addons-path",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra addon folder (repeatable; default: the project's addons/).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, db_url: str | None, addons_path: tuple[str, ...], verbose: int):
    """Durable LLM generation jobs on an Odoo-style addon framework."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(database_url(db_url), list(addons_path) or _addons_path_from_env())


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


main.add_command(worker)
main.add_command(cron)


def _mount_addon_commands() -> None:
    """Add the ``commands`` of every addon's ``cli.py`` to the main group."""
    folders = addon_loader.addon_search_path(_addons_path_from_env())
    addon_loader.extend_import_path(folders)
    for folder in folders:
        for cli_file in sorted(Path(folder).glob("*/cli.py")):
            if not (cli_file.parent / "__manifest__.py").exists():
                continue
            module = importlib.import_module(f"addons.{cli_file.parent.name}.cli")
            for command in getattr(module, "commands", ()):
                main.add_command(command)


def run() -> None:
    """Entry point: turn expected errors into one clear line and exit status 1."""
    _mount_addon_commands()
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (RegistryError, UserError) as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    except SystemExit:
        raise
