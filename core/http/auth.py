"""Who is asking: every request of the API runs as one user, under the ORM's access rights
and record rules, exactly as that user's code would in-process.

Two ways in:

- ``Authorization: Bearer <API token>`` (scripts): tokens are created and revoked by their
  users (``res.users.apikey``, ``/api/tokens``);
- the session cookie set by ``POST /api/session`` (pages). A write made with the cookie must
  carry the session's CSRF token in the ``X-CSRF-Token`` header (the login answer and
  ``GET /api/session`` give it): another site can make a browser send the cookie, not read
  the token.

An endpoint takes ``user: CurrentUser`` and does its unit of work in
``with user.environment() as env:``, which commits before the response is sent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

if TYPE_CHECKING:
    from core.environment import Environment
    from core.registry import Registry

SESSION_COOKIE = "llmjobs_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_HINT = "log in (POST /api/session) or send 'Authorization: Bearer <API token>'"


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from the session token (an HMAC), so it needs no
    storage and changes with the session."""
    return hmac.new(session_token.encode(), b"csrf", hashlib.sha256).hexdigest()


def registry_of(request: Request) -> Registry:
    return request.app.state.registry


@dataclass(frozen=True)
class Principal:
    """The authenticated user of a request."""

    registry: Registry = field(repr=False)
    uid: int
    via: str  # "token" or "session"

    @contextmanager
    def environment(self, readonly: bool = False) -> Iterator[Environment]:
        """A unit of work as this user: committed when the block ends."""
        with self.registry.environment(user=self.uid, readonly=readonly) as env:
            yield env

    def has_group(self, xml_id: str) -> bool:
        with self.registry.environment(readonly=True) as env:
            return env["res.users"].browse(self.uid).has_group(xml_id)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def authenticated(request: Request) -> Principal:
    """The request's user, from its bearer token or its session cookie (401 without
    either)."""
    registry = registry_of(request)
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized("Send the API token as 'Authorization: Bearer <API token>'.")
        with registry.environment() as env:
            uid = env["res.users.apikey"].user_for_key(key.strip())
        if uid is None:
            raise _unauthorized(
                "This API token is unknown or was revoked; create a new one (POST /api/tokens)."
            )
        return Principal(registry, uid, "token")
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _unauthorized(f"Authentication required: {LOGIN_HINT}.")
    with registry.environment() as env:
        uid = env["res.users.session"].user_for_token(token)
    if uid is None:
        raise _unauthorized(f"Your session has ended: {LOGIN_HINT}.")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
            raise HTTPException(
                403,
                f"A write with the session cookie needs the session's CSRF token in the "
                f"{CSRF_HEADER} header (GET /api/session gives it).",
            )
    return Principal(registry, uid, "session")


CurrentUser = Annotated[Principal, Depends(authenticated)]


def require_group(xml_id: str, what: str) -> Callable[[Principal], Principal]:
    """A dependency: the current user, who must be in group ``xml_id`` (403 otherwise);
    ``what`` names the people allowed, e.g. 'LLM managers'."""

    def check(user: CurrentUser) -> Principal:
        if not user.has_group(xml_id):
            raise HTTPException(403, f"Only {what} may do this.")
        return user

    return check
