"""Server-rendered pages on the same app as the API: templates and static files from the
addons, the logged-in user of a page, CSRF for forms, and errors as HTML.

- **Templates**: each loaded addon's ``templates/`` folder, named ``"<addon>/<file>.html"``
  (Jinja2, autoescaped, undefined names are errors). ``render(request, "my_addon/page.html",
  **context)`` adds ``user`` (a ``WebUser``, or None on the login page), ``csrf_token`` and
  ``request``; filters ``when``, ``ago`` and ``duration`` format times, ``static("addon/x.css")``
  is the URL of a static file (with its version, so a changed file is fetched again).
- **Static files**: each loaded addon's ``static/`` folder, at ``/static/<addon>/...``
  (``create_app`` mounts them).
- **Who is asking**: ``user: PageUser`` is the session cookie's user; without a session the
  page answers with a redirect (303) to ``/web/login?next=<the page>``, never a JSON 401. A
  request other than GET/HEAD must carry the session's CSRF token in its form's ``csrf_token``
  field (403 otherwise): every form of a page has ``<input type="hidden" name="csrf_token"
  value="{{ csrf_token }}">``. ``require_page_group(xml_id, what)`` also requires a group (a
  403 page otherwise).
- **Errors**: requests under ``/web`` are answered with HTML error pages (template
  ``base/error.html``), the API's with JSON (core/http/errors.py decides which).
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .auth import SAFE_METHODS, SESSION_COOKIE, Principal, csrf_token, registry_of

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.registry import Registry

PAGE_PREFIX = "/web"
LOGIN_PATH = f"{PAGE_PREFIX}/login"
CSRF_FIELD = "csrf_token"
ERROR_TEMPLATE = "base/error.html"
CSRF_REFUSED = (
    "This form has expired or was not sent from this site's page: reload the page and send "
    "it again."
)


def is_page_path(path: str) -> bool:
    """Whether ``path`` is a page's (its errors are HTML) rather than the API's (JSON)."""
    return path == PAGE_PREFIX or path.startswith(f"{PAGE_PREFIX}/")


@dataclass(frozen=True)
class WebUser(Principal):
    """The logged-in user of a page: a ``Principal`` (``environment()`` runs as them) with
    what pages show and check without another query."""

    name: str = ""
    login: str = ""
    is_manager: bool = False
    groups: frozenset[str] = frozenset()
    csrf_token: str = field(default="", repr=False)

    @property
    def id(self) -> int:
        return self.uid

    def has_group(self, xml_id: str) -> bool:
        return xml_id in self.groups


class LoginRequired(Exception):
    """Raised by ``PageUser`` without a session: answered with a redirect to the login page,
    which comes back to ``next`` after logging in."""

    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


def login_redirect(next_path: str) -> RedirectResponse:
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(next_path, safe='/')}", status_code=303)


def safe_next(next_path: str | None) -> str:
    """``next_path`` when it is a path of this site, else the home page (no open redirect)."""
    if next_path and next_path.startswith("/") and not next_path.startswith(("//", "/\\")):
        return next_path
    return f"{PAGE_PREFIX}/"


def _web_user(registry: Registry, token: str) -> WebUser | None:
    with registry.environment() as env:  # the session's life may be extended: a write
        uid = env["res.users.session"].user_for_token(token)
        if uid is None:
            return None
        user = env["res.users"].sudo().browse(uid)
        return WebUser(
            registry,
            uid,
            "session",
            name=user.name,
            login=user.login,
            is_manager=bool(user.is_manager()),
            groups=user._group_xml_ids(),
            csrf_token=csrf_token(token),
        )


async def page_user(request: Request) -> WebUser:
    """The page's user (see the module docstring): redirect to log in, CSRF on forms."""
    token = request.cookies.get(SESSION_COOKIE)
    user = await run_in_threadpool(_web_user, registry_of(request), token) if token else None
    if user is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(here if request.method in SAFE_METHODS else f"{PAGE_PREFIX}/")
    if request.method not in SAFE_METHODS:
        sent = (await request.form()).get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), user.csrf_token.encode()
        ):
            raise HTTPException(403, CSRF_REFUSED)
    request.state.user = user
    return user


PageUser = Annotated[WebUser, Depends(page_user)]


def require_page_group(xml_id: str, what: str) -> Callable[[WebUser], WebUser]:
    """A dependency: the page's user, who must be in group ``xml_id`` (a 403 page
    otherwise); ``what`` names the people allowed, e.g. 'LLM managers'."""

    def check(user: PageUser) -> WebUser:
        if not user.has_group(xml_id):
            raise HTTPException(403, f"Only {what} may see this page.")
        return user

    return check


# -- templates -------------------------------------------------------------------------------
def when(value: dt.datetime | None, empty: str = "") -> str:
    """A moment as ``2026-01-02 10:30:05`` (UTC)."""
    if not value:
        return empty
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None, empty: str = "") -> str:
    """``0.42 s``, ``12.3 s``, ``4m 05s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None or seconds is False:
        return empty
    seconds = max(float(seconds), 0.0)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def ago(value: dt.datetime | None, empty: str = "") -> str:
    """How long ago ``value`` was: ``12.3 s ago``."""
    if not value:
        return empty
    return f"{duration((dt.datetime.now(dt.UTC) - value).total_seconds())} ago"


def _folders(registry: Registry, name: str) -> dict[str, Path]:
    return {
        manifest.technical_name: manifest.path / name
        for manifest in registry.manifests
        if (manifest.path / name).is_dir()
    }


def template_environment(registry: Registry) -> jinja2.Environment:
    """The templates of every loaded addon (see the module docstring)."""
    loaders = {
        addon: jinja2.FileSystemLoader(folder)
        for addon, folder in _folders(registry, "templates").items()
    }
    environment = jinja2.Environment(
        loader=jinja2.PrefixLoader(loaders, delimiter="/"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(when=when, duration=duration, ago=ago)
    statics = _folders(registry, "static")

    def static(path: str) -> str:
        """The URL of ``"<addon>/<file>"`` of an addon's static folder, with its version."""
        addon, _, name = path.partition("/")
        try:
            version = int(os.stat(statics[addon] / name).st_mtime)
        except (KeyError, OSError):
            raise jinja2.TemplateError(f"No static file '{path}' in any loaded addon") from None
        return f"/static/{addon}/{name}?v={version:x}"

    environment.globals["static"] = static
    return environment


def static_mounts(registry: Registry) -> list[Mount]:
    """``/static/<addon>`` for every loaded addon with a ``static/`` folder."""
    return [
        Mount(f"/static/{addon}", app=StaticFiles(directory=folder), name=f"static-{addon}")
        for addon, folder in _folders(registry, "static").items()
    ]


def install(app: FastAPI, registry: Registry) -> None:
    """Templates and static files of the addons on ``app`` (create_app calls it)."""
    app.state.templates = template_environment(registry)
    for mount in static_mounts(registry):
        app.router.routes.append(mount)


def render(
    request: Request,
    name: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The template ``name`` as an HTML response, with ``user``, ``csrf_token`` and
    ``request`` in its context (``context`` may override them)."""
    user = getattr(request.state, "user", None)
    values = {"request": request, "user": user, "csrf_token": user.csrf_token if user else ""}
    values.update(context)
    html = request.app.state.templates.get_template(name).render(values)
    return HTMLResponse(html, status_code=status_code, headers=headers)


def error_html(app: Any, status: int, detail: str, user: WebUser | None = None) -> str:
    """The HTML error page (for handlers that have no request to ``render`` with)."""
    return app.state.templates.get_template(ERROR_TEMPLATE).render(
        request=None,
        user=user,
        csrf_token=user.csrf_token if user else "",
        status=status,
        title=_title(status),
        detail=detail,
    )


def error_page(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return render(
        request,
        ERROR_TEMPLATE,
        status_code=status,
        headers=headers,
        status=status,
        title=_title(status),
        detail=detail,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
