"""Settings read from the environment, with the defaults a fresh checkout needs.

The default database and the key file live in one place, the *home* folder, whatever folder a
command runs from (a worker started elsewhere finds the same database and key)::

    LLMJOBS_HOME             the home folder (default: var/ in the project folder)
    LLMJOBS_DB_URL           the database URL (default: SQLite file <home>/llmjobs.db)
    LLMJOBS_SECRET_KEY       the Fernet key that encrypts secret fields at rest; when unset it
                             is read from LLMJOBS_SECRET_KEY_FILE (default: <home>/secret.key),
                             generated there on first use (machines sharing one PostgreSQL
                             database must share the key)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The folder of the default database and key file."""
    configured = os.environ.get("LLMJOBS_HOME")
    return Path(configured).resolve() if configured else PROJECT_DIR / "var"


def database_url(explicit: str | None = None) -> str:
    """The database URL: the explicit value, else ``LLMJOBS_DB_URL``, else the SQLite file in
    the home folder."""
    return explicit or os.environ.get("LLMJOBS_DB_URL") or f"sqlite:///{home() / 'llmjobs.db'}"


def secret_key_file() -> Path:
    """The file the Fernet key is read from (and generated into) when LLMJOBS_SECRET_KEY is
    not set."""
    configured = os.environ.get("LLMJOBS_SECRET_KEY_FILE")
    return Path(configured).resolve() if configured else home() / "secret.key"


def secret_key_source() -> str:
    """Where the key comes from, for messages (never the key itself)."""
    if os.environ.get("LLMJOBS_SECRET_KEY"):
        return "LLMJOBS_SECRET_KEY"
    return f"the key file {secret_key_file()}"


def secret_key() -> bytes:
    """The Fernet key for secret fields (created on first use when none is configured)."""
    from cryptography.fernet import Fernet

    key = os.environ.get("LLMJOBS_SECRET_KEY")
    if key:
        return key.encode()
    path = secret_key_file()
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    new_key = Fernet.generate_key()
    # Written whole to a file of our own (owner-only), then linked into place: concurrent first
    # starts agree on one key, and none reads a key file that is still empty.
    draft = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(new_key)
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        draft.unlink()
    return new_key
