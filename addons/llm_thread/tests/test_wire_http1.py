"""The lean HTTP/1.1 transport (wire/http1.py) against a real socket server that answers
each request with bytes given by the test: every way a body can be framed, keep-alive reuse
and its limits, and what a malformed or cut answer becomes. (test_wire_async.py runs every
protocol and fault of the simulator through it as well.)"""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest

from addons.llm_thread.wire import ProviderError, TextDelta, astream_chat
from addons.llm_thread.wire.http1 import HTTP1Transport, plain_http_mounts

SSE = (
    b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
    b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

OK = b"HTTP/1.1 200 OK\r\n"
EVENTS = b"content-type: text/event-stream\r\n"
CLOSE = b"connection: close\r\n"


class ScriptedServer:
    """Answers the n-th request it receives with ``answers[n]`` (the last one again once they
    run out), on keep-alive connections; counts connections and keeps the requests."""

    def __init__(self, *answers: bytes):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            pending = b""
            while True:
                request, pending = self._read_request(connection, pending)
                if request is None:
                    return
                self.requests.append(request)
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
                try:
                    connection.sendall(answer)
                except OSError:
                    return
                if b"connection: close" in answer.lower():
                    return

    @staticmethod
    def _read_request(connection, data):
        while b"\r\n\r\n" not in data:
            received = connection.recv(65536)
            if not received:
                return None, b""
            data += received
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += connection.recv(65536)
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def scripted():
    servers = []

    def make(*answers: bytes) -> ScriptedServer:
        servers.append(ScriptedServer(*answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def sized(body: bytes, *headers: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n" + b"".join(
        h + b"\r\n" for h in headers
    )
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    head = OK + EVENTS + b"transfer-encoding: chunked\r\n\r\n"
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    return head + body + b"0\r\n" + trailer + b"\r\n"


def fetch(url: str, count: int = 1, **request) -> list[httpx.Response]:
    """``count`` GETs (or ``request``) on one client with the lean transport; each body read."""

    async def run():
        async with httpx.AsyncClient(transport=HTTP1Transport(), timeout=5) as client:
            responses = []
            for _ in range(count):
                response = await client.request(request.pop("method", "GET"), url, **request)
                responses.append(response)
            return responses

    return asyncio.run(run())


def test_sized_and_chunked_bodies_are_read_whole_on_one_kept_alive_connection(scripted):
    big = bytes(range(256)) * 12_000  # 3 MB: more than the transport buffers before pausing
    server = scripted(
        sized(b"hello"),
        chunked(b"he", b"llo", trailer=b"x-t: 1\r\n"),
        sized(big),
        chunked(big, b"!"),
    )
    responses = fetch(server.url + "/a?b=1", count=4)
    assert [r.status_code for r in responses] == [200] * 4
    assert responses[0].content == b"hello" and responses[1].content == b"hello"
    assert responses[2].content == big and responses[3].content == big + b"!"
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /a?b=1 HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in server.requests[0].lower()


def test_a_body_sent_with_the_request_arrives_whole(scripted):
    server = scripted(sized(b"ok"))
    [response] = fetch(server.url + "/v1", method="POST", json={"q": "é" * 1000})
    assert response.content == b"ok"
    assert server.requests[0].endswith(('{"q":"' + "é" * 1000 + '"}').encode())


def test_a_body_that_ends_with_the_connection_is_read_and_the_connection_not_reused(scripted):
    server = scripted(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end", sized(b"next"))
    responses = fetch(server.url, count=2)
    assert [r.content for r in responses] == [b"to the end", b"next"]
    assert server.connections == 2


def test_informational_answers_are_skipped_and_empty_bodies_end_at_once(scripted):
    informational = b"HTTP/1.1 100 Continue\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    server = scripted(informational + sized(b"after"), no_content, sized(b"last"))
    responses = fetch(server.url, count=3)
    assert responses[0].content == b"after" and responses[0].reason_phrase == "OK"
    assert responses[1].status_code == 204 and responses[1].content == b""
    assert responses[2].content == b"last"
    assert server.connections == 1  # the connection outlived the empty body


def test_a_body_left_unread_closes_its_connection(scripted):
    server = scripted(chunked(b"a" * 100, b"b" * 100), sized(b"second"))

    async def run():
        async with httpx.AsyncClient(transport=HTTP1Transport(), timeout=5) as client:
            async with client.stream("GET", server.url) as response:
                async for _ in response.aiter_raw():
                    break  # the rest is left unread
            return (await client.get(server.url)).content

    assert asyncio.run(run()) == b"second"
    assert server.connections == 2


def test_keep_alive_stops_where_either_side_says_close(scripted):
    server = scripted(sized(b"1", b"connection: close"), sized(b"2"), sized(b"3"))
    responses = fetch(server.url, count=3)
    assert [r.content for r in responses] == [b"1", b"2", b"3"]
    assert server.connections == 2  # the first answer closed its connection
    responses = fetch(server.url, count=2, headers={"connection": "close"})
    assert server.connections == 4


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"HTTQ/1.1 200 OK\r\n\r\n", "Malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "Malformed header line"),
        (OK + EVENTS + b"transfer-encoding: chunked\r\n\r\nzz\r\n", "Malformed chunk"),
        (OK + EVENTS + CLOSE + b"content-length: 10\r\n\r\nabc", "received 3 bytes, expected 10"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "Malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"y" * 70_000, "longer than"),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-", "middle of the response's headers"),
        (OK + EVENTS + CLOSE + b"transfer-encoding: chunked\r\n\r\n5\r\nab", "chunked read"),
    ],
)
def test_a_malformed_or_cut_answer_is_a_retryable_protocol_error(scripted, answer, says):
    server = scripted(answer)
    args = {"provider": "p", "api_base": server.url + "/v1", "api_key": None, "model": "m"}

    async def run():
        async with httpx.AsyncClient(transport=HTTP1Transport(), timeout=5) as client:
            with pytest.raises(ProviderError) as caught:
                messages = [{"role": "user", "content": "hi"}]
                async for _ in astream_chat("openai", client, messages=messages, **args):
                    pass
            return caught.value

    error = asyncio.run(run())
    assert error.retryable and says in str(error.__cause__ or error)


def test_a_stream_is_decoded_and_its_connection_kept(scripted):
    server = scripted(chunked(SSE[:30], SSE[30:]))
    args = {"provider": "p", "api_base": server.url + "/v1", "api_key": None, "model": "m"}

    async def run():
        async with httpx.AsyncClient(transport=HTTP1Transport(), timeout=5) as client:
            messages = [{"role": "user", "content": "hi"}]
            return [
                [e async for e in astream_chat("openai", client, messages=messages, **args)]
                for _ in range(3)
            ]

    for events in asyncio.run(run()):
        assert events[0] == TextDelta("hi")
    assert server.connections == 1 and len(server.requests) == 3


def test_a_refused_connection_is_a_connect_error():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        fetch(f"http://127.0.0.1:{port}/")


def test_tls_origins_are_not_taken():
    with pytest.raises(httpx.UnsupportedProtocol, match="serves http://"):
        fetch("https://127.0.0.1:1/")


def test_plain_http_goes_through_it_unless_a_proxy_is_configured(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(plain_http_mounts()["http://"], HTTP1Transport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert plain_http_mounts() == {}
