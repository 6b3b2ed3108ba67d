"""The login page, and logging out, for the pages (core/http/pages.py).

::

    GET  /web/login?next=/web/jobs   the form: login, password
    POST /web/login                  log in (the API's throttle on failures), then go to ``next``
    POST /web/logout                 end the session

There is no session yet to derive the login form's CSRF token from: the form gets a random
token that is also set in a cookie of its own (HttpOnly, SameSite=Strict, for the login path
only), and a login whose field does not match the cookie is refused, so another site cannot
log a browser in under an account of its choosing.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from core.http import LOGIN_PATH, SESSION_COOKIE, PageUser, render
from core.http.pages import PAGE_PREFIX, safe_next

from .session import LoginRefused, open_session, set_session_cookie

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "llmjobs_login_csrf"
TEMPLATE = "base/login.html"


def _form(
    request: Request,
    next_path: str,
    login: str = "",
    error: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        TEMPLATE,
        status_code=status_code,
        headers=headers,
        csrf_token=token,
        next=safe_next(next_path),
        login=login,
        error=error,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path=LOGIN_PATH,
        secure=request.url.scheme == "https",
    )
    return response


@router.get(LOGIN_PATH)
def login_page(request: Request, next: str | None = None) -> Response:
    return _form(request, next or f"{PAGE_PREFIX}/")


@router.post(LOGIN_PATH)
def log_in(
    request: Request,
    login: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        error = "This login form has expired or was not sent from this site: log in again."
        return _form(request, next, login, error, 403)
    if not login.strip() or not password:
        return _form(request, next, login, "Enter your login and your password.", 400)
    try:
        token, _uid = open_session(request, login.strip(), password)
    except LoginRefused as refused:
        if refused.retry_after is None:
            return _form(request, next, login, refused.message, 401)
        headers = {"Retry-After": str(refused.retry_after)}
        return _form(request, next, login, refused.message, 429, headers)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, request, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=LOGIN_PATH)
    return response


@router.post(f"{PAGE_PREFIX}/logout")
def log_out(request: Request, user: PageUser) -> Response:
    with user.environment() as env:
        env["res.users.session"].close(request.cookies[SESSION_COOKIE])
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
