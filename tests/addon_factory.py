"""Write throw-away addons into a folder, for tests of loading and inheritance.

Each call gets a unique addon name (modules are imported once per process), which the test
uses through the returned name.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path


def write_addon(
    folder: Path,
    stem: str,
    depends=(),
    models: str = "",
    manifest: str | None = None,
    files: dict[str, str] | None = None,
) -> str:
    """Create addon ``<stem>_<random>`` in ``folder``; returns its technical name."""
    name = f"{stem}_{uuid.uuid4().hex[:8]}"
    addon = folder / name
    addon.mkdir(parents=True)
    if manifest is None:
        manifest = repr({"name": stem, "version": "1.0", "depends": list(depends)})
    (addon / "__manifest__.py").write_text(manifest)
    (addon / "__init__.py").write_text("from . import models  # noqa: F401\n" if models else "")
    if models:
        (addon / "models.py").write_text(
            "from core import api, fields, models\n\n" + textwrap.dedent(models)
        )
    for relative, content in (files or {}).items():
        path = addon / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return name
