"""Finding addons and ordering them by their dependencies.

An addon is a folder with a ``__manifest__.py`` holding one dict literal::

    {"name": "LLM Thread", "version": "0.1", "depends": ["base"], "summary": "...",
     "installable": True}

Addons are imported as ``addons.<folder>``: every folder of ``addons_path`` is added to the
``addons`` package's search path, as Odoo does with ``odoo.addons``. ``base`` (users, groups,
access, crons) ships inside ``core`` and every addon depends on it implicitly.

The load order is topological and stable: an addon's depth is the length of its longest
dependency chain; addons load by (depth, name), so the order never depends on the file system.
"""

from __future__ import annotations

import ast
import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import addons as addons_package

from .exceptions import RegistryError

_logger = logging.getLogger(__name__)

BASE_ADDON = "base"
CORE_ADDONS_DIR = Path(__file__).parent / "builtin_addons"
PROJECT_ADDONS_DIR = Path(addons_package.__file__).parent
_MANIFEST_KEYS = {
    "name": str,
    "version": str,
    "depends": list,
    "summary": str,
    "installable": bool,
    "description": str,
    "author": str,
    "license": str,
    "data": list,
}


@dataclass(frozen=True)
class Manifest:
    """What an addon's ``__manifest__.py`` declares."""

    technical_name: str
    path: Path
    name: str
    version: str
    depends: tuple[str, ...]
    summary: str
    installable: bool


def read_manifest(addon_dir: Path) -> Manifest:
    """Parse ``addon_dir/__manifest__.py``; a broken one is a RegistryError naming the file."""
    manifest_file = addon_dir / "__manifest__.py"
    technical_name = addon_dir.name
    try:
        # utf-8-sig: a byte order mark, as some editors write one, is not part of the dict
        values = ast.literal_eval(manifest_file.read_text(encoding="utf-8-sig"))
    except (SyntaxError, ValueError, TypeError, RecursionError) as exc:  # TypeError: {[1]: 2}
        raise RegistryError(
            f"Addon '{technical_name}': {manifest_file} is not a valid manifest "
            f"(it must be one Python dict literal): {exc}"
        ) from None
    if not isinstance(values, dict):
        raise RegistryError(f"Addon '{technical_name}': {manifest_file} must contain a dict.")
    for key, value in values.items():
        expected = _MANIFEST_KEYS.get(key)
        if expected and not isinstance(value, expected):
            raise RegistryError(
                f"Addon '{technical_name}': manifest key '{key}' must be a "
                f"{expected.__name__}, not {type(value).__name__}."
            )
    depends = tuple(values.get("depends", ()))
    if not all(isinstance(dep, str) for dep in depends):
        raise RegistryError(f"Addon '{technical_name}': 'depends' must list addon names.")
    if technical_name != BASE_ADDON and BASE_ADDON not in depends:
        depends = (BASE_ADDON, *depends)
    return Manifest(
        technical_name=technical_name,
        path=addon_dir,
        name=values.get("name", technical_name),
        version=values.get("version", "0.0"),
        depends=depends,
        summary=values.get("summary", ""),
        installable=values.get("installable", True),
    )


def addon_search_path(addons_path: Iterable[str | Path] | None) -> list[Path]:
    """The folders searched for addons: core's own first, then the configured ones."""
    folders = [CORE_ADDONS_DIR]
    for entry in addons_path if addons_path is not None else [PROJECT_ADDONS_DIR]:
        folder = Path(entry).resolve()
        if not folder.is_dir():
            raise RegistryError(f"Addons path '{entry}' is not a folder.")
        if folder not in folders:
            folders.append(folder)
    return folders


def discover(folders: Sequence[Path]) -> dict[str, Manifest]:
    """Every addon found in ``folders``; the first folder that has an addon name wins."""
    found: dict[str, Manifest] = {}
    for folder in folders:
        for manifest_file in sorted(folder.glob("*/__manifest__.py")):
            manifest = read_manifest(manifest_file.parent)
            if manifest.technical_name in found:
                _logger.warning(
                    "Addon '%s' in %s is shadowed by the one in %s",
                    manifest.technical_name,
                    folder,
                    found[manifest.technical_name].path.parent,
                )
                continue
            found[manifest.technical_name] = manifest
    return found


def resolve_order(
    available: dict[str, Manifest], selected: Iterable[str] | None = None
) -> list[Manifest]:
    """The addons to load, dependencies first.

    ``selected=None`` loads every installable addon; otherwise the named ones and everything
    they depend on. A missing or uninstallable dependency and a dependency cycle raise.
    """
    roots = (
        [name for name, manifest in sorted(available.items()) if manifest.installable]
        if selected is None
        else [BASE_ADDON, *selected]
    )
    depth: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> int:
        if name in depth:
            return depth[name]
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise RegistryError(f"Addon dependency cycle: {cycle}.")
        manifest = available.get(name)
        required_by = f" (required by {' -> '.join(chain)})" if chain else ""
        if manifest is None:
            raise RegistryError(
                f"Addon '{name}' not found in the addons path{required_by}. "
                f"Known addons: {', '.join(sorted(available)) or 'none'}."
            )
        if not manifest.installable:
            raise RegistryError(f"Addon '{name}' is not installable{required_by}.")
        depth[name] = max((visit(dep, (*chain, name)) + 1 for dep in manifest.depends), default=0)
        return depth[name]

    for root in roots:
        visit(root, ())
    return [available[name] for name in sorted(depth, key=lambda name: (depth[name], name))]


def extend_import_path(folders: Sequence[Path]) -> None:
    """Make ``import addons.<name>`` find addons in every folder."""
    for folder in folders:
        if str(folder) not in addons_package.__path__:
            addons_package.__path__.append(str(folder))


def import_addon(manifest: Manifest) -> None:
    """Import the addon's package, which defines (registers) its model classes."""
    module_name = f"addons.{manifest.technical_name}"
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(
            f"Addon '{manifest.technical_name}' failed to import from {manifest.path}: {exc}"
        ) from exc
