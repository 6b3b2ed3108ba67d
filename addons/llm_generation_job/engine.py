"""The worker's stream engine: the replies of all running attempts streamed by one asyncio
event loop, every write of theirs made by one writer thread.

::

    event loop thread   a task per attempt: the provider's answer on shared
                        httpx.AsyncClients (pooled keep-alive connections; HTTP/2 where the
                        provider offers it over TLS; plain HTTP on wire/http1.py's lean
                        transport), read by the protocol's decoder (wire/);
                        an addon's own service (its ``<service>_chat``) runs in a thread of its
                        own and feeds the task. Cancelling a task stops its stream at once,
                        even while the provider sends nothing: for a requested cancellation, a
                        lost lease, a shutdown, or the attempt's deadline.
    writer thread       (writer.py) the streams' pieces, their ends and the leases, recorded
                        in one transaction per flush interval.

A stream costs a task and a socket while it waits, not a thread nor a database connection: the
writer holds one connection at a time, however many streams run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import certifi
import httpx

from addons.llm_thread import wire
from addons.llm_thread.models.llm_provider import shared_client
from addons.llm_thread.wire.errors import ProviderError
from addons.llm_thread.wire.events import (
    Finish,
    RateLimit,
    Resumable,
    StreamEvent,
    TextDelta,
    Usage,
)
from addons.llm_thread.wire.http1 import plain_http_mounts
from core.registry import Registry

from .execution import PreparedAttempt, describe_failure
from .store import Lease
from .writer import Writer

_logger = logging.getLogger(__name__)

STREAMS_PER_CLIENT = 4
"""httpcore's pool walks all its connections, polling the idle ones' sockets, for every
request it queues and each time a response closes: one client for many streams costs O(n²)
CPU (a claim's requests arrive together). Each client serves a few slots (with 32, the walk
took a seventh of a 1-token job's CPU); keep-alive connections are reused within each."""


class Stream:
    """One attempt's reply as it streams: the text so far, what is not saved yet, and how it
    ended. The loop thread adds to it; the writer takes from it (under ``lock``)."""

    def __init__(self, prepared: PreparedAttempt):
        self.prepared = prepared
        self.lease = prepared.lease
        self.parts: list[str] = [prepared.text] if prepared.text else []
        self.pending: list[str] = []
        self.added = False  # a piece came in this attempt
        self.cursor: int | None = None  # the background response's cursor of the last piece
        # The background response generating it, (id, cursor of its creation), and whether
        # the writer recorded it.
        self.response: tuple[str, int] | None = None
        self.response_saved = False
        # Seconds the provider said its requests limit stays spent (remaining-requests at 0):
        # for the writer to hold every worker back (then None again).
        self.throttle: float | None = None
        self.remaining: int | None = None  # the provider's remaining requests, when it said
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.outcome: tuple | None = None  # set once, when the stream is over
        self.abort_reason: str | None = None  # "fenced", "shutdown"
        self.recorded = threading.Event()  # the writer recorded the outcome
        self.result: str | None = None  # what the writer made of it: completed, failed...
        self.task: asyncio.Task | None = None
        self.lock = threading.Lock()

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, text: str, cursor: int | None = None) -> bool:
        """Append ``text`` (a background response's event ``cursor``); True for the
        attempt's first piece (the writer saves it at once)."""
        text = text.replace("\x00", "")  # a text column cannot hold NUL on PostgreSQL
        with self.lock:
            first, self.added = not self.added, True
            self.parts.append(text)
            self.pending.append(text)
            self.cursor = cursor if cursor is not None else self.cursor
        return first

    def take(self) -> tuple[str, int | None]:
        """The text added since the last take, and the cursor of its last piece."""
        with self.lock:
            taken, self.pending = "".join(self.pending), []
            return taken, self.cursor


class StreamEngine:
    """Streams of attempts (``submit``), stopped at will (``abort``) or at the engine's
    ``stop``."""

    def __init__(self, registry: Registry, slots: int, *, on_beat=None, on_free=None):
        """``on_beat(env)``: called by the writer at each beat, in its transaction (the
        runner beats its worker row there); ``on_free()``: a slot became free (the runner
        claims more)."""
        self.registry = registry
        self.slots = slots
        self.on_free = on_free
        self.streams: dict[Lease, Stream] = {}
        self.held: dict[Lease, Any] = {}  # leases held outside streams (provider job hooks)
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="llmjobs-streams", daemon=True)
        self._clients: list[httpx.AsyncClient] = []
        self.writer = Writer(registry, self, on_beat=on_beat)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open_clients(), self._loop).result(timeout=10)
        self.writer.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _open_clients(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=STREAMS_PER_CLIENT)
        self._clients = [
            httpx.AsyncClient(
                verify=_tls_context(),
                limits=limits,
                timeout=None,
                http2=_http2(),
                mounts=plain_http_mounts(max_idle=STREAMS_PER_CLIENT),
            )
            for _ in range(max(1, -(-self.slots // STREAMS_PER_CLIENT)))
        ]

    def stop(self, timeout: float) -> None:
        """Let the streams finish for ``timeout`` seconds, stop the others (their jobs are
        handed back), record every outcome, then stop."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        for stream in self._streams():
            self.abort(stream.lease, "shutdown")
        for stream in self._streams():
            stream.recorded.wait(timeout=max(deadline - time.monotonic(), 0) + 30)
        self.writer.stop()
        for client in self._clients:
            asyncio.run_coroutine_threadsafe(client.aclose(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> StreamEngine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(timeout=0)

    # -- streams -----------------------------------------------------------------------------
    def _streams(self) -> list[Stream]:
        with self.lock:
            return list(self.streams.values())

    def running(self) -> int:
        with self.lock:
            return len(self.streams) + len(self.held)

    def submit(self, prepared: PreparedAttempt) -> Stream:
        """Stream ``prepared``'s reply; the returned stream's ``recorded`` is set when its end
        is in the database."""
        stream = Stream(prepared)
        with self.lock:
            self.streams[stream.lease] = stream
        self._loop.call_soon_threadsafe(self._begin, stream)
        return stream

    def _begin(self, stream: Stream) -> None:
        if stream.abort_reason:  # aborted before it began
            stream.outcome = (stream.abort_reason,)
            self.writer.wake()
            return
        stream.task = self._loop.create_task(self._run(stream))

    def abort(self, lease: Lease, reason: str) -> None:
        """Stop the stream of ``lease`` at once ("fenced": cancelled or lease lost;
        "shutdown")."""
        with self.lock:
            stream = self.streams.get(lease)
            control = self.held.get(lease)
        if control is not None:
            control.abort(reason)
        if stream is None or stream.abort_reason:
            return
        stream.abort_reason = reason
        self._loop.call_soon_threadsafe(self._cancel, stream)

    @staticmethod
    def _cancel(stream: Stream) -> None:
        if stream.task is not None:
            stream.task.cancel()

    def forget(self, stream: Stream) -> None:
        """The writer recorded the stream's end."""
        with self.lock:
            self.streams.pop(stream.lease, None)
        self._freed()

    def _freed(self) -> None:
        if self.on_free is not None:
            self.on_free()

    def hold(self, lease: Lease, control: Any) -> None:
        """Renew ``lease`` with the streams' while a provider's job hook runs (``control``
        has ``abort(reason)``), until ``unhold``."""
        with self.lock:
            self.held[lease] = control

    def unhold(self, lease: Lease) -> None:
        with self.lock:
            released = self.held.pop(lease, None) is not None
        if released:
            self._freed()

    # -- one stream --------------------------------------------------------------------------
    async def _run(self, stream: Stream) -> None:
        prepared = stream.prepared
        try:
            async with asyncio.timeout(prepared.deadline):
                async for event in self._events(prepared):
                    if isinstance(event, TextDelta):
                        if stream.add(event.text, event.cursor):
                            self.writer.wake()  # the first piece is saved at once
                    elif isinstance(event, RateLimit):
                        stream.remaining = event.remaining_requests
                        if event.remaining_requests == 0 and event.reset_seconds:
                            stream.throttle = event.reset_seconds
                            self.writer.wake()
                    elif isinstance(event, Resumable):
                        stream.response = (event.response_id, event.cursor)
                        self.writer.wake()  # saved at once: a takeover re-attaches to it
                    elif isinstance(event, Usage):
                        stream.usage = event
                    elif isinstance(event, Finish):
                        stream.finish = event
            outcome: tuple = ("complete",)
        except asyncio.CancelledError:
            outcome = (stream.abort_reason or "shutdown",)
        except TimeoutError:
            limit = f"{prepared.deadline:g}"
            outcome = ("fail", f"The reply took longer than its queue allows ({limit} s).", True)
        except Exception as error:
            if _exhausted(error):  # ours, not the provider's: back-pressure, not a failure
                _logger.warning("Generation job %s: %s; handed back", stream.lease.job_id, error)
                outcome = ("release", "The worker ran out of connections or sockets.")
            elif prepared.resume and isinstance(error, ProviderError) and error.status == 404:
                text = (
                    f"Background response {prepared.resume[0]} is gone from the provider; the "
                    "next attempt generates the reply anew."
                )
                outcome = ("fail", text, True)
            else:
                text, retryable, retry_after = describe_failure(error, stream.lease.job_id)
                if retryable and isinstance(error, ProviderError) and error.status == 429:
                    # The provider's back-pressure: the job waits in line, not a failure.
                    outcome = ("throttled", text, retry_after)
                else:
                    outcome = ("fail", text, retryable, retry_after)
        stream.outcome = outcome
        self.writer.wake()

    def _events(self, prepared: PreparedAttempt) -> AsyncIterator[StreamEvent]:
        if prepared.protocol is not None:
            client = self._clients[prepared.lease.job_id % len(self._clients)]
            if prepared.background:
                return wire.astream_background(
                    client, resume=prepared.resume, **prepared.stream_args
                )
            return wire.astream_chat(prepared.protocol, client, **prepared.stream_args)
        return self._service_events(prepared)

    def stop_response(self, stream: Stream) -> None:
        """Cancel at the provider the background response of a stream whose job was
        cancelled or failed (best effort, off the writer's thread): nobody will read it."""
        response = stream.response or stream.prepared.resume
        if response is None:
            return
        args = stream.prepared.stream_args
        threading.Thread(
            target=_cancel_response, args=(args, response[0]), name="llmjobs-cancel", daemon=True
        ).start()

    async def _service_events(self, prepared: PreparedAttempt) -> AsyncIterator[StreamEvent]:
        """An addon's own service (a synchronous ``<service>_chat`` generator), run in a
        thread that hands its events to this task; stopping the task stops it at its next
        event."""
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=self._serve, args=(prepared, queue, stop, loop), daemon=True
        )
        thread.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            stop.set()

    def _serve(self, prepared, queue: asyncio.Queue, stop: threading.Event, loop) -> None:
        def put(kind: str, value: Any = None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        try:
            with self.registry.environment(readonly=True) as env:
                provider = env["llm.provider"].browse(prepared.provider_id)
                events = provider.chat(
                    prepared.messages, model=prepared.model, stream=True, **prepared.options
                )
                env.cr.commit()  # no connection held while it streams
                try:
                    for event in events:
                        if stop.is_set():
                            return
                        put("event", event)
                finally:
                    events.close()
            put("end")
        except BaseException as error:  # handed to the task, which decides
            put("error", error)


def _cancel_response(args: dict[str, Any], response_id: str) -> None:
    try:
        wire.openai_responses.cancel(
            shared_client(args.get("timeout")),
            provider=args["provider"],
            api_base=args["api_base"],
            api_key=args["api_key"],
            response_id=response_id,
        )
    except ProviderError as error:
        _logger.warning("Background response %s was not cancelled: %s", response_id, error)


def _exhausted(error: BaseException) -> bool:
    """Whether ``error`` means this worker ran out of its own resources (connections of its
    pool, file descriptors) rather than the provider failing."""
    if isinstance(error, ProviderError):
        cause = error.__cause__
        return isinstance(cause, httpx.PoolTimeout) or _too_many_files(cause)
    return _too_many_files(error)


def _too_many_files(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == 24:  # EMFILE
            return True
        error = error.__cause__ or error.__context__
    return False


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


@functools.cache
def _http2() -> bool:
    try:
        import h2  # noqa: F401  (httpx[http2])
    except ImportError:
        return False
    return True
