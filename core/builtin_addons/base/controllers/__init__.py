"""The base addon's HTTP surface: logging in and out, API tokens (``session``), and the login
page (``pages``)."""

from fastapi import APIRouter

from . import pages, session

router = APIRouter()
router.include_router(session.router)
router.include_router(pages.router)
