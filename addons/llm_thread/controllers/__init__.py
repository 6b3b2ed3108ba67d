"""The HTTP API of threads, messages, models and providers (see core/http)."""

from fastapi import APIRouter

from . import providers, threads

router = APIRouter()
router.include_router(threads.router)
router.include_router(providers.router)
