"""Errors as JSON: every failure of a request is ``{"detail": "...", ...}`` with its status.

=========================  ======  =====================================================
raised                     status  body
=========================  ======  =====================================================
ValidationError            422     ``detail`` (it names the field)
request body/query invalid 422     ``detail``, and ``errors``: ``[{"field", "message"}]``
AccessError                403     ``detail`` (names the model and operation, no data)
MissingError, not found    404     ``detail``
UserError                  400     ``detail`` (``conflict()`` for 409)
DatabaseUnavailable        503     ``detail``, with ``Retry-After``
anything else              500     ``detail`` with a reference to the server's log line
=========================  ======  =====================================================

No response carries a stack trace, SQL or a secret: unexpected errors are logged (redacted,
core.redaction) and answered with a reference only.

The pages (paths under ``/web``, core/http/pages.py) get the same statuses as HTML error
pages, and a page that needs a login redirects to the login page.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.exceptions import (
    AccessError,
    DatabaseUnavailable,
    MissingError,
    UserError,
    ValidationError,
)

from . import pages

_logger = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """The body of every error response."""

    detail: str
    errors: list[FieldError] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The operation was refused; `detail` says why"},
    401: {"model": ErrorOut, "description": "Not authenticated"},
    403: {"model": ErrorOut, "description": "Not allowed for this user"},
    404: {"model": ErrorOut, "description": "No such record, or not visible to this user"},
    422: {"model": ErrorOut, "description": "Invalid input; `errors` names the fields"},
    503: {"model": ErrorOut, "description": "The database is unavailable; retry shortly"},
}


# For the operations that a record's current state may refuse.
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "Refused in the record's current state"}
}


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"{what} not found (or not visible to you).")


def conflict(message: str) -> HTTPException:
    return HTTPException(409, message)


# The refusals of the ORM and their statuses (a subclass not listed takes its parent's).
_STATUS = {ValidationError: 422, AccessError: 403, MissingError: 404, UserError: 400}


def _field_name(location: tuple) -> str:
    parts = [str(part) for part in location if part not in ("body",)]
    return ".".join(parts) or "body"


def _answer(
    request: Request,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response:
    """JSON for the API, an HTML error page for the pages."""
    if pages.is_page_path(request.url.path):
        if status == 404 and detail == "Not Found":  # routing's: no such page
            detail = f"There is no page at {request.url.path}."
        return pages.error_page(request, status, detail, headers)
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the responses above."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = [
            {"field": _field_name(tuple(error.get("loc", ()))), "message": error.get("msg", "")}
            for error in exc.errors()
        ]
        names = ", ".join(dict.fromkeys(error["field"] for error in errors))
        return _answer(request, 422, f"Invalid input: {names}.", errors=errors)

    # Starlette's own class: routing's 404 and 405 are answered here too.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _answer(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(pages.LoginRequired)
    async def login_required(request: Request, exc: pages.LoginRequired):
        return pages.login_redirect(exc.next_path)

    async def refused(request: Request, exc: UserError):
        status = next(_STATUS[kind] for kind in type(exc).__mro__ if kind in _STATUS)
        return _answer(request, status, exc.message)

    for refusal in _STATUS:  # Starlette picks the handler of the nearest class
        app.add_exception_handler(refusal, refused)

    @app.exception_handler(DatabaseUnavailable)
    async def database_unavailable(request: Request, exc: DatabaseUnavailable):
        return _answer(request, 503, str(exc), {"Retry-After": "1"})

    app.add_middleware(_UnexpectedErrors)


class _UnexpectedErrors:
    """Answers an unexpected exception with a 500 that names a reference, and logs the
    traceback under it (Starlette's own handler would answer, then re-raise into the server,
    which resets the connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as error:
            reference = secrets.token_hex(4)
            _logger.error(
                "Unexpected error in %s %s (reference %s)",
                scope.get("method"),
                scope.get("path"),
                reference,
                exc_info=error,
            )
            if started:  # the answer has begun: there is nothing left to say
                return
            detail = f"Internal error; the server's log has the details (reference {reference})."
            if pages.is_page_path(scope.get("path", "")):
                html = pages.error_html(scope["app"], 500, detail)
                await HTMLResponse(html, status_code=500)(scope, receive, send)
            else:
                await JSONResponse({"detail": detail}, status_code=500)(scope, receive, send)
