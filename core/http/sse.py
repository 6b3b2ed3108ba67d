"""Server-Sent Events from a blocking iterator of update dicts.

Each update becomes one event: ``event:`` its ``type``, ``data:`` the update as one line of
JSON, and ``id:`` when ``event_id`` gives one (a client that reconnects sends the last id it
saw as ``Last-Event-ID``). A comment line goes out every ``KEEPALIVE`` seconds of silence, so
that proxies keep an idle stream open.

The iterator runs in a thread of its own (it may block on the database or a provider for a
long time, and must not hold one of the server's pooled threads meanwhile). When the client
goes away the iterator is closed, in its thread, at its next update: what that means is the
iterator's business (a direct generation cancels its reply; following a queued job only stops
watching). An error the iterator raises ends the stream with an ``error`` event whose text is
safe to show: a UserError's message, or a reference to the server's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi.responses import StreamingResponse

from core.exceptions import DatabaseUnavailable, UserError

_logger = logging.getLogger(__name__)
KEEPALIVE = 15.0
_END = object()


def format_event(update: dict[str, Any], event_id: str | None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {update.get('type', 'message')}", f"data: {json.dumps(update)}"]
    return "\n".join(lines) + "\n\n"


def _safe_error(error: BaseException) -> dict[str, Any]:
    if isinstance(error, (UserError, DatabaseUnavailable)):
        return {"type": "error", "error": str(error)}
    reference = secrets.token_hex(4)
    _logger.error("Unexpected error in an event stream (reference %s)", reference, exc_info=error)
    text = f"Internal error; the server's log has the details (reference {reference})."
    return {"type": "error", "error": text}


def event_stream(
    updates: Iterator[dict[str, Any]],
    event_id: Callable[[dict[str, Any]], str | None] = lambda update: None,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """A ``text/event-stream`` response of ``updates`` (see the module docstring)."""

    async def body() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the server's loop has ended
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def produce() -> None:
            try:
                for update in updates:
                    put(update)
                    if stop.is_set():
                        break
            except Exception as error:
                put(_safe_error(error))
            finally:
                close = getattr(updates, "close", None)
                if close is not None:
                    close()
                put(_END)

        threading.Thread(target=produce, name="sse-producer", daemon=True).start()
        try:
            while True:
                try:
                    update = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if update is _END:
                    return
                yield format_event(update, event_id(update))
        finally:
            stop.set()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )
