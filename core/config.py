"""Settings read from the environment, with the defaults a fresh checkout needs.

``LLMJOBS_DB_URL``      database URL (default: SQLite file ``var/llmjobs.db``)
``LLMJOBS_SECRET_KEY``  Fernet key that encrypts secret fields at rest; when unset, a key is
                        generated once into ``var/secret.key`` (share that key between machines
                        using one PostgreSQL database)
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///var/llmjobs.db"
DEFAULT_SECRET_KEY_FILE = "var/secret.key"


def database_url(explicit: str | None = None) -> str:
    """The database URL: the explicit value, else ``LLMJOBS_DB_URL``, else the SQLite default."""
    return explicit or os.environ.get("LLMJOBS_DB_URL") or DEFAULT_DB_URL


def secret_key() -> bytes:
    """The Fernet key for secret fields (created on first use when none is configured)."""
    from cryptography.fernet import Fernet

    key = os.environ.get("LLMJOBS_SECRET_KEY")
    if key:
        return key.encode()
    path = Path(os.environ.get("LLMJOBS_SECRET_KEY_FILE", DEFAULT_SECRET_KEY_FILE))
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    new_key = Fernet.generate_key()
    # Create with owner-only permissions; O_EXCL makes concurrent first starts agree on one key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(new_key)
    return new_key
