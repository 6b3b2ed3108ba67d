"""How commands print what they found: a ``rich`` table on a terminal, aligned plain text when
the output is piped (no colours, no box drawing: ``grep`` and ``awk`` read it), and JSON with
``--json`` (for scripts: every value, dates in ISO 8601).

::

    @click.command()
    @json_option
    def jobs(as_json: bool) -> None:
        rows = [{"id": 1, "state": "queued"}]
        print_table(rows, [("id", "ID"), ("state", "State")], as_json=as_json, empty="No jobs.")
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

Columns = Sequence[tuple[str, str]]  # (key in the row, header)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
)

STATE_STYLES = {
    "queued": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "healthy": "green",
    "warning": "yellow",
    "critical": "red",
    "disabled": "dim",
}


def is_terminal() -> bool:
    return sys.stdout.isatty()


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def text(value: Any) -> str:
    """A value as a table cell: dates to the second, in UTC; nothing as '-'."""
    if value is None or value is False or value == "":
        return "-"
    if value is True:
        return "yes"
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(text(item) for item in value) or "-"
    return str(value)


def _styled(key: str, cell: str) -> str:
    style = STATE_STYLES.get(cell) if key in ("state", "health", "outcome") else None
    return f"[{style}]{cell}[/]" if style else cell


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Columns,
    *,
    as_json: bool = False,
    title: str | None = None,
    empty: str = "Nothing to show.",
) -> None:
    """``rows`` as a table of ``columns`` (JSON: the rows whole, every key)."""
    if as_json:
        print_json(list(rows))
        return
    if not rows:
        click.echo(empty)
        return
    cells = [[text(row.get(key)) for key, _header in columns] for row in rows]
    if is_terminal():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=title, title_justify="left", header_style="bold")
        for _key, header in columns:
            table.add_column(header, overflow="fold")
        for line in cells:
            table.add_row(
                *(_styled(key, escape(cell)) for (key, _h), cell in zip(columns, line, strict=True))
            )
        Console().print(table)
        return
    if title:
        click.echo(title)
    headers = [header for _key, header in columns]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    for line in [headers, *cells]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def print_record(
    record: Mapping[str, Any],
    fields: Columns,
    *,
    as_json: bool = False,
    title: str | None = None,
    extra: Callable[[], None] | None = None,
) -> None:
    """One record as ``label: value`` lines (JSON: the record whole). ``extra`` prints what
    follows the fields (a sub-table, say) when not printing JSON."""
    if as_json:
        print_json(dict(record))
        return
    if title:
        click.secho(title, bold=is_terminal())
    width = max(len(label) for _key, label in fields)
    for key, label in fields:
        value = text(record.get(key))
        lines = value.splitlines() or ["-"]
        click.echo(f"{label + ':':<{width + 1}} {lines[0]}")
        for line in lines[1:]:
            click.echo(f"{'':<{width + 1}} {line}")
    if extra is not None:
        extra()
