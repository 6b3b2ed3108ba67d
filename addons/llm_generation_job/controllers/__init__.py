"""The HTTP API of generation jobs: generating replies as Server-Sent Events (direct or
queued, resumable), jobs, queues, workers and /metrics (see core/http)."""

from fastapi import APIRouter

from . import generate, jobs, metrics, overview, queues, usage

router = APIRouter()
router.include_router(generate.router)
router.include_router(jobs.router)
router.include_router(queues.router)
router.include_router(metrics.router)
router.include_router(overview.router)
router.include_router(usage.router)
