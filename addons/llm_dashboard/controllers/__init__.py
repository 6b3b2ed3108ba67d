"""The dashboard's pages (server-rendered; see core/http/pages.py): overview, jobs, one job
with its live reply, queues, providers, usage, and the chat pages."""

from fastapi import APIRouter

from . import job, jobs, overview, providers, queues, threads, usage

router = APIRouter(include_in_schema=False)
router.include_router(overview.router)
router.include_router(jobs.router)  # before job's: /web/jobs/bulk/... is not a job's page
router.include_router(job.router)
router.include_router(queues.router)
router.include_router(providers.router)
router.include_router(threads.router)
router.include_router(usage.router)
