"""The SQL statements a block of test code sends, for tests that count them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa


@contextlib.contextmanager
def statements(registry) -> Iterator[list[str]]:
    """The statements sent through ``registry``'s engine inside the block, each on one line
    (whitespace collapsed), in order."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(" ".join(statement.split()))

    sa.event.listen(registry.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(registry.engine, "before_cursor_execute", record)
