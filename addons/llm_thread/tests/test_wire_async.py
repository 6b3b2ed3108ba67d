"""The asynchronous driver of the wire protocols gives what the synchronous one gives — the
same events, the same classified errors — for every protocol and fault; it bounds each read
by its timeout, and a cancelled stream closes its connection at once. All of it on httpx's
own transport (httpcore) and on the worker's lean one for plain HTTP (wire/http1.py)."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest

from addons.llm_thread.wire import (
    PROTOCOLS,
    Finish,
    ProviderError,
    TextDelta,
    astream_chat,
    stream_chat,
)
from addons.llm_thread.wire.http1 import HTTP1Transport

from .test_wire import KEY, MODELS

SCENARIOS = [
    "Tell me a story",
    "Hi [sim:status=429 retry_after=2]",
    "Hi [sim:status=500]",
    "Hi [sim:status=400]",
    "Hi [sim:cut_after=5]",
    "Hi [sim:end_after=4]",
    "Hi [sim:stream_error_after=3]",
    "Hi [sim:malformed_after=2]",
]


@pytest.fixture(params=list(PROTOCOLS))
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(params=["httpcore", "http1"])
def async_client(request):
    """``httpx.AsyncClient`` on one transport or the other."""
    if request.param == "httpcore":
        return httpx.AsyncClient
    return lambda **options: httpx.AsyncClient(mounts={"http://": HTTP1Transport()}, **options)


def request_of(server, text, **extra):
    return {
        "provider": "p",
        "api_base": server.url,
        "api_key": None,
        "model": MODELS[server.protocol],
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def outcome(events_then_error):
    """(events, error summary) of a finished stream; response ids and times differ from one
    request to the next, so they are left out."""
    events, error = events_then_error
    events = [
        Finish(e.reason, {k: v for k, v in e.metadata.items() if k not in ("id", "created_at")})
        if isinstance(e, Finish)
        else e
        for e in events
    ]
    described = error and (type(error), error.status, error.retryable, error.message)
    return events, described


def sync_outcome(server, text):
    events = []
    with httpx.Client(timeout=5) as client:
        try:
            events.extend(stream_chat(server.protocol, client, **request_of(server, text)))
        except ProviderError as error:
            return outcome((events, error))
    return outcome((events, None))


async def async_collect(client, server, text, **extra):
    events = []
    try:
        async for event in astream_chat(
            server.protocol, client, **request_of(server, text, **extra)
        ):
            events.append(event)
    except ProviderError as error:
        return events, error
    return events, None


def async_outcome(async_client, server, text):
    async def run():
        async with async_client(timeout=5) as client:
            return await async_collect(client, server, text)

    return outcome(asyncio.run(run()))


@pytest.mark.parametrize("text", SCENARIOS)
def test_the_async_driver_gives_what_the_sync_one_gives(async_client, server, text):
    assert async_outcome(async_client, server, text) == sync_outcome(server, text)


def test_a_slow_read_is_a_retryable_timeout(async_client, server):
    async def run():
        async with async_client() as client:
            return await async_collect(client, server, "Hi [sim:first_token_delay=2]", timeout=0.3)

    events, error = asyncio.run(run())
    assert not events and error.retryable and "Timed out" in error.message


def test_a_cancelled_stream_closes_its_connection_at_once(async_client, server):
    async def run():
        async with async_client(timeout=30) as client:
            task = asyncio.create_task(
                async_collect(client, server, "Hi [sim:first_token_delay=20] think")
            )
            while server.stats()["in_flight"] == 0:
                await asyncio.sleep(0.01)
            task.cancel()  # the provider sends nothing: the read is blocked in the socket
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert server.wait_idle(timeout=5)["disconnects"] == 1


def test_the_key_is_sent_and_never_shown(async_client, make_simulator):
    server = make_simulator("openai", api_key=KEY)

    async def run(key):
        async with async_client(timeout=5) as client:
            return await async_collect(client, server, "Hi", api_key=key)

    events, error = asyncio.run(run(KEY))
    assert events and error is None
    _, error = asyncio.run(run(KEY + "-wrong"))
    assert error.status == 401 and not error.retryable
    assert KEY not in str(error) and KEY not in repr(error)


class OnceServer:
    """A server that answers the first request of each connection and, when a second comes
    on it, closes the connection without answering: what a client meets when it reuses a
    pooled connection just as the server's keep-alive timeout closes it."""

    BODY = (
        'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
        'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
        "data: [DONE]\n\n"
    )

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer_once, args=(connection,), daemon=True).start()

    def _answer_once(self, connection):
        with connection:
            self._read_request(connection)
            payload = self.BODY.encode()
            head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
            connection.sendall(f"{head}{len(payload)}\r\n\r\n".encode() + payload)
            self._read_request(connection)  # the next request on this connection: dropped

    @staticmethod
    def _read_request(connection):
        data = b""
        while b"\r\n\r\n" not in data:
            received = connection.recv(65536)
            if not received:
                return
            data += received
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += connection.recv(65536)

    def close(self):
        self.socket.close()


@pytest.mark.parametrize("driver", ["sync", "async", "async on http1"])
def test_a_request_on_a_connection_the_server_closed_is_sent_again(driver):
    server = OnceServer()
    args = {
        "provider": "p",
        "api_base": server.url,
        "api_key": None,
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }
    try:
        if driver == "sync":
            with httpx.Client(timeout=5) as client:
                for _ in range(3):
                    events = list(stream_chat("openai", client, **args))
                    assert events[0] == TextDelta("hi")
        else:
            mounts = {"http://": HTTP1Transport()} if driver == "async on http1" else None

            async def run():
                async with httpx.AsyncClient(timeout=5, mounts=mounts) as client:
                    for _ in range(3):
                        events = [e async for e in astream_chat("openai", client, **args)]
                        assert events[0] == TextDelta("hi")

            asyncio.run(run())
    finally:
        server.close()
    assert server.connections == 3  # each later request found its pooled connection dropped
