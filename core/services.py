"""Long-running background work that addons run inside ``llmjobs worker``.

An addon provides ``services.py`` (next to its ``__manifest__.py``) with a function
``services(registry) -> list[Service]``; the worker starts the services of every loaded addon,
in addon order, and stops them in reverse order when it shuts down.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from .exceptions import RegistryError

if TYPE_CHECKING:
    from .registry import Registry


class Service(Protocol):
    name: str

    def start(self) -> None:
        """Start the work in background threads and return."""

    def stop(self, timeout: float) -> None:
        """Take no new work; finish (or hand back) the work in flight within ``timeout``
        seconds, then return."""


def load_services(registry: Registry) -> list[Service]:
    """The services of every loaded addon that has a ``services.py``, in addon order."""
    found: list[Service] = []
    for manifest in registry.manifests:
        if not (manifest.path / "services.py").is_file():
            continue
        module = importlib.import_module(f"addons.{manifest.technical_name}.services")
        factory = getattr(module, "services", None)
        if not callable(factory):
            raise RegistryError(
                f"Addon '{manifest.technical_name}': {manifest.path / 'services.py'} must define "
                "services(registry) returning a list of services."
            )
        found.extend(factory(registry))
    return found
