"""Helpers for tests that need a real database: SQLite files and PostgreSQL schemas.

PostgreSQL tests use the server named by ``LLMJOBS_TEST_PG_URL``; each test gets a schema of
its own (selected through the connection's ``search_path``), dropped afterwards. Without that
variable they skip, unless ``LLMJOBS_REQUIRE_PG`` or ``CI`` is set, where they fail: CI must run
them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from .database import normalize_url

PG_URL_VARIABLE = "LLMJOBS_TEST_PG_URL"


def postgres_required() -> bool:
    return bool(os.environ.get("LLMJOBS_REQUIRE_PG") or os.environ.get("CI"))


def postgres_base_url() -> str | None:
    return os.environ.get(PG_URL_VARIABLE) or None  # set but empty: not set


@contextlib.contextmanager
def postgres_schema_url(base_url: str) -> Iterator[str]:
    """A URL whose connections work in a fresh schema; the schema is dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(normalize_url(base_url), poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@contextlib.contextmanager
def database_url(backend: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database of ``backend`` ('sqlite' or 'postgresql')."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'test.db'}"
        return
    base = postgres_base_url()
    if base is None:
        raise LookupError(f"{PG_URL_VARIABLE} is not set")
    with postgres_schema_url(base) as url:
        yield url


def served(app, log_level: str = "warning"):
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread (a context
    manager yielding its base URL, ``http://127.0.0.1:<port>``)."""
    from .http.server import serving

    return serving(app, log_level=log_level)
