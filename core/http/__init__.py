"""The HTTP surface of the framework: an ASGI app whose routes come from the addons.

::

    from fastapi import APIRouter
    from core.http import CurrentUser, not_found

    router = APIRouter(prefix="/api/notes", tags=["notes"])

    @router.get("/{note_id}")
    def read_note(note_id: int, user: CurrentUser) -> dict:
        with user.environment(readonly=True) as env:
            note = env["x.note"].search([("id", "=", note_id)])   # record rules apply
            if not note:
                raise not_found(f"Note {note_id}")
            return {"id": note.id, "name": note.name}

Pages (server-rendered HTML under ``/web``) take ``user: PageUser`` and answer with
``render(request, "my_addon/page.html", **context)``; see core/http/pages.py.

``llmjobs serve`` runs ``create_app(registry)`` under uvicorn.
"""

from .app import create_app
from .auth import CSRF_HEADER, SESSION_COOKIE, CurrentUser, Principal, registry_of, require_group
from .errors import CONFLICT, ErrorOut, conflict, not_found
from .pages import CSRF_FIELD, LOGIN_PATH, PageUser, WebUser, render, require_page_group
from .records import visible_record
from .sse import event_stream

__all__ = [
    "CONFLICT",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_PATH",
    "SESSION_COOKIE",
    "CurrentUser",
    "ErrorOut",
    "PageUser",
    "Principal",
    "WebUser",
    "conflict",
    "create_app",
    "event_stream",
    "not_found",
    "registry_of",
    "render",
    "require_group",
    "require_page_group",
    "visible_record",
]
