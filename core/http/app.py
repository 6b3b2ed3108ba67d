"""The ASGI application: one FastAPI app on a registry, with the routes of every addon.

An addon serves HTTP by providing a ``controllers`` package (next to its ``__manifest__.py``)
that exposes ``router``, a FastAPI ``APIRouter``; routers are included in addon order. The
OpenAPI document is at ``/openapi.json`` (and browsable at ``/docs``). An addon's
``templates/`` and ``static/`` folders serve its pages (core/http/pages.py): core mounts each
``static/`` at ``/static/<addon>``.

``services`` (e.g. an embedded job worker, see core/services.py) start with the app and stop
with it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI

from core.exceptions import RegistryError

from . import errors, pages

if TYPE_CHECKING:
    from core.registry import Registry
    from core.services import Service

SERVICE_STOP_TIMEOUT = 30.0


def addon_routers(registry: Registry) -> list[APIRouter]:
    """The ``router`` of every loaded addon that has a ``controllers`` package."""
    found = []
    for manifest in registry.manifests:
        if not (manifest.path / "controllers" / "__init__.py").is_file():
            continue
        module = importlib.import_module(f"addons.{manifest.technical_name}.controllers")
        router = getattr(module, "router", None)
        if not isinstance(router, APIRouter):
            raise RegistryError(
                f"Addon '{manifest.technical_name}': its controllers package must expose "
                "`router`, a fastapi.APIRouter."
            )
        found.append(router)
    return found


def create_app(registry: Registry, services: Sequence[Service] = ()) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        started = []
        try:
            for service in services:
                service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                service.stop(SERVICE_STOP_TIMEOUT)

    app = FastAPI(
        title="llmjobs",
        summary="Durable LLM generation jobs: threads, streamed replies, jobs and queues.",
        version="0.1.0",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    app.state.registry = registry
    errors.install(app)
    pages.install(app, registry)
    for router in addon_routers(registry):
        app.include_router(router)
    return app
