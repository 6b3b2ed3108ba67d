"""Logging in and out, and the API tokens of the current user.

::

    POST   /api/session          {"login", "password"}  -> the user and the CSRF token; sets
                                                           the session cookie (HttpOnly)
    GET    /api/session          who is asking (and the CSRF token of a cookie session)
    DELETE /api/session          log out
    GET    /api/tokens           the user's API tokens (never the tokens themselves)
    POST   /api/tokens           {"name"} -> a new token, shown this once
    DELETE /api/tokens/{id}      revoke it
"""

from __future__ import annotations

import datetime as dt
import math

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from core.exceptions import AccessError
from core.http import SESSION_COOKIE, CurrentUser, ErrorOut, not_found, registry_of
from core.http.auth import csrf_token

from ..models.res_users_session import SESSION_DAYS

router = APIRouter(prefix="/api", tags=["authentication"])


class LoginIn(BaseModel):
    login: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: int
    login: str
    name: str
    groups: list[str] = Field(description="External ids of the user's groups, implied included")


class SessionOut(BaseModel):
    user: UserOut
    via: str = Field(description="'session' (the cookie) or 'token' (a bearer API token)")
    csrf_token: str | None = Field(
        None, description="Send it as X-CSRF-Token with every write made with the cookie"
    )


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="What the token is for")


class TokenOut(BaseModel):
    id: int
    name: str
    hint: str = Field(description="The token's first characters")
    created_at: dt.datetime


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown this once, never again")


def _user_out(env, uid: int) -> UserOut:
    user = env["res.users"].sudo().browse(uid)
    return UserOut(
        id=user.id, login=user.login, name=user.name, groups=sorted(user._group_xml_ids())
    )


def _token_out(key) -> TokenOut:
    return TokenOut(id=key.id, name=key.name, hint=key.hint or "", created_at=key.create_date)


class LoginRefused(Exception):
    """A login attempt refused: wrong credentials, or too many failures (``retry_after``
    seconds to wait)."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def open_session(request: Request, login: str, password: str) -> tuple[str, int]:
    """Log in: a new session's token and the user's id, or LoginRefused. After 5 failed
    attempts for one login (or from one address) within 5 minutes, attempts are refused
    until the window has passed (the API and the login page share this throttle)."""
    address = request.client.host if request.client else ""
    with registry_of(request).environment() as env:
        failures = env["res.users.login.failure"]
        wait = failures.retry_after(login, address)
        if wait is None:
            try:
                uid = env["res.users"].authenticate(login, password)
            except AccessError:
                failures.record(login, address)
            else:
                failures.forget(login)
                return env["res.users.session"].open(uid), uid
    if wait is not None:
        seconds = math.ceil(wait)
        raise LoginRefused(f"Too many failed logins; try again in {seconds} s.", seconds)
    raise LoginRefused("Wrong login or password.")


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_DAYS * 86400,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.post(
    "/session",
    responses={429: {"model": ErrorOut, "description": "Too many failed logins; see Retry-After"}},
)
def log_in(body: LoginIn, request: Request, response: Response) -> SessionOut:
    """Log in with a login and password: sets the session cookie. After 5 failed attempts
    for one login (or from one address) within 5 minutes, attempts are refused (429) until
    the window has passed."""
    try:
        token, uid = open_session(request, body.login, body.password)
    except LoginRefused as refused:
        if refused.retry_after is None:
            raise HTTPException(401, refused.message) from None
        raise HTTPException(
            429, refused.message, headers={"Retry-After": str(refused.retry_after)}
        ) from None
    with registry_of(request).environment(readonly=True) as env:
        user = _user_out(env, uid)
    set_session_cookie(response, request, token)
    return SessionOut(user=user, via="session", csrf_token=csrf_token(token))


@router.get("/session")
def current_session(user: CurrentUser, request: Request) -> SessionOut:
    """Who is asking, and the CSRF token of a cookie session."""
    with user.environment(readonly=True) as env:
        out = _user_out(env, user.uid)
    cookie = request.cookies.get(SESSION_COOKIE) if user.via == "session" else None
    return SessionOut(user=out, via=user.via, csrf_token=csrf_token(cookie) if cookie else None)


@router.delete("/session", status_code=204)
def log_out(user: CurrentUser, request: Request, response: Response) -> None:
    """End the cookie session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with user.environment() as env:
            env["res.users.session"].close(cookie)
    response.delete_cookie(SESSION_COOKIE)


@router.get("/tokens")
def list_tokens(user: CurrentUser) -> list[TokenOut]:
    with user.environment(readonly=True) as env:
        keys = env["res.users.apikey"].search([("user_id", "=", user.uid)])
        return [_token_out(key) for key in keys]


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, user: CurrentUser) -> NewTokenOut:
    """A new API token for scripts: ``Authorization: Bearer <token>``. It is shown in this
    answer only; store it now."""
    with user.environment() as env:
        key, token = env["res.users.apikey"].generate(body.name)
        return NewTokenOut(**_token_out(key).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: int, user: CurrentUser) -> None:
    with user.environment() as env:
        key = env["res.users.apikey"].search([("id", "=", token_id)])
        if not key:
            raise not_found(f"API token {token_id}")
        key.unlink()
