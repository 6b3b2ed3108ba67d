"""``cron.yaml``: the scheduled actions, read and checked before a worker starts anything.

::

    - name: cleanup_old_generation_jobs     # unique
      model: llm.generation.job
      method: cleanup_old_jobs
      interval: 1 day                       # N seconds|minutes|hours|days, N > 0
      args: {days: 7}                       # keyword arguments of the method (optional)
      user: __system__                      # login to run as (default: the superuser)
      active: true                          # (default: true)

Anything wrong, a model no loaded addon defines or a method the model lacks included, stops
the start (and ``llmjobs cron list``) with a ``RegistryError`` naming the file, the entry and
its line. Workers with other addons, sharing a database, use cron files of their own
(``--cron-file``): each keeps the rows of its own models in step (see ``rows``).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..exceptions import RegistryError

if TYPE_CHECKING:
    from ..registry import Registry

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "cron.yaml"
UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
KEYS = ("name", "model", "method", "interval", "args", "user", "active")
_REQUIRED = ("name", "model", "method", "interval")
_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$")
MAX_INTERVAL_SECONDS = 365 * 86400


@dataclass(frozen=True)
class CronEntry:
    """One scheduled action as declared (``where`` is ``'<file> line <n>'`` for messages)."""

    name: str
    model: str
    method: str
    interval_number: int
    interval_type: str
    where: str
    args: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    active: bool = True

    @property
    def interval_seconds(self) -> int:
        return self.interval_number * UNIT_SECONDS[self.interval_type]

    @property
    def label(self) -> str:
        return f"Cron '{self.name}' ({self.where})"


@dataclass(frozen=True)
class CronConfig:
    """The entries of a cron file, checked against a registry."""

    entries: tuple[CronEntry, ...] = ()

    @property
    def declared(self) -> set[str]:
        return {e.name for e in self.entries}


def load_cron_file(registry: Registry, path: Path | None = None) -> CronConfig:
    """Read and check ``path`` (default: ``cron.yaml`` at the project root, which may be
    absent; an explicit path must exist)."""
    if path is None:
        if not DEFAULT_FILE.exists():
            return CronConfig()
        path = DEFAULT_FILE
    elif not path.is_file():
        raise RegistryError(f"Cron file {path} does not exist.")
    entries = _parse_file(path)
    for entry in entries:
        if entry.model not in registry.models:
            close = difflib.get_close_matches(entry.model, list(registry.models), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RegistryError(
                f"{entry.label}: no loaded addon defines the model '{entry.model}'{hint}. "
                "Fix the name, load its addon (--addons-path), or give this worker a cron "
                "file of its own (--cron-file)."
            )
        model = registry.models[entry.model]
        if not callable(getattr(model, entry.method, None)):
            methods = [name for name in dir(model) if callable(getattr(model, name, None))]
            close = difflib.get_close_matches(entry.method, methods, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RegistryError(
                f"{entry.label}: model '{entry.model}' has no method '{entry.method}'{hint}."
            )
    return CronConfig(tuple(entries))


def _parse_file(path: Path) -> list[CronEntry]:
    """Every entry of the file, well-formed and with unique names (models not checked)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{path} is not UTF-8 text: {exc}.") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path} is not valid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        return []
    if not isinstance(data, list):
        raise RegistryError(
            f"{path} must be a list of scheduled actions (got a {type(data).__name__})."
        )
    entries: list[CronEntry] = []
    seen: dict[str, str] = {}
    for item, node in zip(data, root.value, strict=True):
        entry = _parse_entry(item, f"{path} line {node.start_mark.line + 1}")
        if entry.name in seen:
            raise RegistryError(f"{entry.label} is declared twice (first at {seen[entry.name]}).")
        seen[entry.name] = entry.where
        entries.append(entry)
    return entries


def _parse_entry(item: Any, where: str) -> CronEntry:
    if not isinstance(item, dict):
        raise RegistryError(
            f"{where}: a scheduled action must be a mapping with {', '.join(_REQUIRED)}."
        )
    name = item.get("name")
    label = f"Cron '{name}' ({where})" if isinstance(name, str) and name else where
    unknown = sorted(str(key) for key in set(item) - set(KEYS))
    if unknown:
        raise RegistryError(
            f"{label}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(KEYS)}."
        )
    missing = [key for key in _REQUIRED if item.get(key) in (None, "")]
    if missing:
        raise RegistryError(f"{label}: missing {', '.join(missing)}.")
    for key in ("name", "model", "method", "user"):
        if key in item and not isinstance(item[key], str):
            raise RegistryError(f"{label}: {key} must be a string, not {item[key]!r}.")
        if key in item and not item[key].isprintable():
            raise RegistryError(
                f"{label}: {key} {item[key]!r} holds control characters; use printable text."
            )
    match = _INTERVAL.match(str(item["interval"]))
    if not match or int(match.group(1)) <= 0:
        raise RegistryError(
            f"{label}: interval {item['interval']!r} must be 'N seconds', 'N minutes', "
            "'N hours' or 'N days' with N > 0 (e.g. '30 seconds')."
        )
    if int(match.group(1)) * UNIT_SECONDS[match.group(2) + "s"] > MAX_INTERVAL_SECONDS:
        raise RegistryError(f"{label}: interval {item['interval']!r} is longer than 365 days.")
    args = item.get("args") or {}
    if not isinstance(args, dict) or not all(isinstance(key, str) for key in args):
        raise RegistryError(
            f"{label}: args must be a mapping of keyword arguments (names are strings)."
        )
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"{label}: args must be JSON data (strings, numbers...): {exc}."
        ) from None
    if _holds_nul(args):
        raise RegistryError(f"{label}: args hold a NUL character, which JSON columns refuse.")
    active = item.get("active", True)
    if not isinstance(active, bool):
        raise RegistryError(f"{label}: active must be true or false, not {active!r}.")
    return CronEntry(
        name=name,
        model=item["model"],
        method=item["method"],
        interval_number=int(match.group(1)),
        interval_type=match.group(2) + "s",
        where=where,
        args=args,
        user=item.get("user"),
        active=active,
    )


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(_holds_nul(item) for item in value)
