"""Long-running background work that addons run inside ``llmjobs worker``.

An addon provides ``addons/<addon>/services.py`` with ``services(registry) -> list[Service]``;
the worker starts every loaded addon's services and stops them on shutdown.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .registry import Registry


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None:
        """Finish (or hand back) the work in flight within ``timeout`` seconds, then stop."""


def load_services(registry: Registry) -> list[Service]:
    """The services of every loaded addon, in addon order."""
    found: list[Service] = []
    for addon in registry.addons:
        module_name = f"addons.{addon}.services"
        if importlib.util.find_spec(module_name) is None:
            continue
        found.extend(importlib.import_module(module_name).services(registry))
    return found
