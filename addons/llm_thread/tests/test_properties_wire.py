"""Property tests of the wire parsers (hypothesis): whatever a provider sends back — SSE or
NDJSON streams with random, truncated or mistyped content, error bodies, odd statuses and
headers, a connection dropped midway — each protocol's client either yields well-typed events
(text pieces, usage, finish) or raises its own classified ``ProviderError``; never another
exception, and never the API key in a message.

The decoders are fed directly (they are pure); the same bytes also go through the sync and
async drivers (``transport``) on an ``httpx.MockTransport``, since the bytes are what is
under test, and both drivers must agree.
"""

from __future__ import annotations

import asyncio
import json
import math

import httpx
from httpx_sse import ServerSentEvent
from hypothesis import example, given, settings
from hypothesis import strategies as st

from addons.llm_thread.wire import PROTOCOLS, transport
from addons.llm_thread.wire.errors import ProviderError, parse_retry_after
from addons.llm_thread.wire.events import Finish, TextDelta, Usage
from core.fields import text_problem

PROPERTY = settings(max_examples=300)  # the "llmjobs" profile: conftest.py
KEY = "sk-prop-5c0ffee5c0ffee5c0ffee"
PROVIDER = "prop"
REQUEST = {"api_base": "http://provider.test/v1", "model": "m", "messages": []}

# -- JSON shapes, right and wrong -------------------------------------------------------------
texts = st.text(max_size=6) | st.sampled_from(["", "\x00", "\ud800", KEY, f"key {KEY}!", "é"])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=5,
)


def maybe(strategy):
    """Mostly the right shape, sometimes anything."""
    return st.one_of(strategy, strategy, strategy, junk)


counts = maybe(st.integers(0, 10_000) | st.none())
errors_payload = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "type": maybe(
                st.sampled_from(["overloaded_error", "invalid_request_error", "server_error"])
            ),
            "message": maybe(texts),
        },
    )
)
openai_chunks = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(texts),
        "model": maybe(texts),
        "choices": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "delta": maybe(
                                st.fixed_dictionaries(
                                    {},
                                    optional={"content": maybe(texts | st.none()), "role": texts},
                                )
                            ),
                            "finish_reason": maybe(st.sampled_from([None, "stop", "length"])),
                            "index": counts,
                        },
                    )
                ),
                max_size=2,
            )
        ),
        "usage": maybe(
            st.fixed_dictionaries(
                {}, optional={"prompt_tokens": counts, "completion_tokens": counts}
            )
            | st.none()
        ),
        "error": st.none() | errors_payload,
    },
)
anthropic_kinds = st.sampled_from(
    [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
        "unknown",
    ]
)
anthropic_data = st.fixed_dictionaries(
    {"type": maybe(anthropic_kinds)},
    optional={
        "message": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": maybe(texts),
                    "model": maybe(texts),
                    "usage": maybe(
                        st.fixed_dictionaries(
                            {}, optional={"input_tokens": counts, "cache_read_input_tokens": counts}
                        )
                    ),
                },
            )
        ),
        "delta": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "type": maybe(st.sampled_from(["text_delta", "input_json_delta"])),
                    "text": maybe(texts),
                    "stop_reason": maybe(st.sampled_from(["end_turn", None])),
                },
            )
        ),
        "usage": maybe(st.fixed_dictionaries({}, optional={"output_tokens": counts})),
        "error": errors_payload,
        "index": counts,
    },
)
ollama_lines = st.fixed_dictionaries(
    {},
    optional={
        "model": maybe(texts),
        "message": maybe(
            st.fixed_dictionaries({}, optional={"role": texts, "content": maybe(texts)})
        ),
        "done": maybe(st.booleans()),
        "done_reason": maybe(st.sampled_from(["stop", "length"])),
        "prompt_eval_count": counts,
        "eval_count": counts,
        "total_duration": counts,
        "error": st.none() | maybe(texts) | errors_payload,
    },
)


def _dumps(value) -> str:
    return json.dumps(value)


def data_texts(objects):
    """An event's data: the JSON of an object, cut short or replaced by any text."""
    dumped = objects.map(_dumps)
    return st.one_of(
        dumped,
        dumped,
        dumped,
        st.tuples(dumped, st.integers(0, 40)).map(lambda pair: pair[0][: pair[1]]),
        junk.map(_dumps),
        texts,
        st.just("[" * 5000),  # nested deeper than the JSON parser recurses
    )


sse_events = {
    "openai": st.builds(
        ServerSentEvent,
        event=st.just("message"),
        data=data_texts(openai_chunks) | st.just("[DONE]"),
    ),
    "anthropic": st.builds(
        ServerSentEvent, event=anthropic_kinds | texts, data=data_texts(anthropic_data)
    ),
}
stream_items = {**sse_events, "ollama": data_texts(ollama_lines) | st.just("")}
feeds = {protocol: st.lists(items, max_size=6) for protocol, items in stream_items.items()}


def _sse(data: dict, event: str = "message") -> ServerSentEvent:
    return ServerSentEvent(event=event, data=json.dumps(data))


def well_formed(protocol: str, pieces: list[str]) -> list:
    """A complete stream of ``pieces`` as the protocol sends it."""
    if protocol == "openai":
        chunks = [{"id": "c1", "choices": [{"delta": {"content": p}}]} for p in pieces]
        chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        return [*map(_sse, chunks), ServerSentEvent(data="[DONE]")]
    if protocol == "anthropic":
        start = {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 3}}}
        deltas = [
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": p}}
            for p in pieces
        ]
        end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
        events = [start, *deltas, end, {"type": "message_stop"}]
        return [_sse(event, event["type"]) for event in events]
    lines = [{"message": {"role": "assistant", "content": p}, "done": False} for p in pieces]
    lines.append({"done": True, "done_reason": "stop", "eval_count": 2})
    return [json.dumps(line) for line in lines]


@st.composite
def streams(draw, protocol: str) -> list:
    """A well-formed stream, one with an item replaced or left out, or any items at all."""
    items = well_formed(protocol, draw(st.lists(texts, max_size=4)))
    choice = draw(st.integers(0, 3))
    if choice == 1:
        spot = draw(st.integers(0, len(items) - 1))
        replacement = draw(st.lists(stream_items[protocol], max_size=1))
        items[spot : spot + 1] = replacement
    elif choice == 2:
        items = draw(feeds[protocol])
    return items


# -- what every outcome must look like --------------------------------------------------------
def check_events(events: list) -> None:
    """Text pieces, then usage (optional) and finish last, each well typed."""
    for event in events[:-2]:
        assert isinstance(event, TextDelta), event
    for event in events:
        if isinstance(event, TextDelta):  # storable: no NUL, no lone surrogate
            assert isinstance(event.text, str) and event.text and not text_problem(event.text)
        elif isinstance(event, Usage):
            for count in (event.prompt_tokens, event.completion_tokens):
                assert count is None or (type(count) is int and count >= 0), event
        else:
            assert isinstance(event, Finish), event
            assert event.reason is None or isinstance(event.reason, str), event
            assert event.reason is None or not text_problem(event.reason)
            for value in event.metadata.values():  # plain values a JSON column takes
                if isinstance(value, str):
                    assert not text_problem(value)
                else:
                    assert isinstance(value, int | float) and math.isfinite(value)
    if events:
        assert isinstance(events[-1], Finish)


def check_error(error: ProviderError) -> None:
    assert isinstance(error.retryable, bool) and error.provider == PROVIDER
    assert error.status is None or isinstance(error.status, int)
    retry_after = error.retry_after
    assert retry_after is None or (math.isfinite(retry_after) and retry_after >= 0)
    for text in (str(error), repr(error), error.summary):
        assert KEY not in text, "the API key is in a provider error"


def decode(protocol: str, items: list) -> list | ProviderError:
    decoder = PROTOCOLS[protocol].Decoder(PROVIDER, KEY)
    events: list = []
    try:
        for item in items:
            events += decoder.feed(item)
            if decoder.done:
                break
        events += decoder.finish()
    except ProviderError as error:
        check_error(error)
        return error
    check_events(events)
    return events


@PROPERTY
@given(items=feeds["openai"] | streams("openai"))
@example(items=[ServerSentEvent(data='{"choices": 5}')])  # TypeError: int is not iterable
@example(items=[ServerSentEvent(data='{"choices": [1]}')])  # AttributeError: int has no .get
@example(items=[ServerSentEvent(data='{"choices": [{"delta": {"content": 7}}]}')])
@example(items=[ServerSentEvent(data='{"usage": [1]}')])
@example(items=[ServerSentEvent(data='{"error": {"type": [1]}}')])  # unhashable error type
@example(items=[ServerSentEvent(data="[" * 5000)])  # RecursionError from json.loads
def test_openai_decoder(items):
    decode("openai", items)


@PROPERTY
@given(items=feeds["anthropic"] | streams("anthropic"))
@example(items=[ServerSentEvent(data='{"type": "message_start", "message": 1}')])
@example(
    items=[
        ServerSentEvent(
            data='{"type": "message_start", "message": {"usage": {"input_tokens": "7"}}}'
        )
    ]
)  # sum()
@example(
    items=[
        ServerSentEvent(data='{"type": "message_start"}'),
        ServerSentEvent(
            data='{"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}'
        ),
    ]
)
def test_anthropic_decoder(items):
    decode("anthropic", items)


@PROPERTY
@given(items=feeds["ollama"] | streams("ollama"))
@example(items=['{"message": "hi"}'])  # AttributeError: str has no .get
@example(items=['{"message": {"content": ["x"]}, "done": true}'])
@example(items=['{"done": true, "eval_count": "many"}'])
def test_ollama_decoder(items):
    decode("ollama", items)


# -- the same bytes through the drivers ------------------------------------------------------
class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body in pieces, optionally cut by a network error after them."""

    def __init__(self, parts: list[bytes], cut: type[Exception] | None):
        self.parts, self.cut = parts, cut

    def __iter__(self):
        yield from self.parts
        if self.cut:
            raise self.cut("connection lost")

    async def __aiter__(self):
        for part in self.parts:
            yield part
        if self.cut:
            raise self.cut("connection lost")


def _sse_bytes(events: list[ServerSentEvent]) -> bytes:
    lines = []
    for event in events:
        if event.event and event.event != "message":
            lines.append(f"event: {event.event}")
        lines += [f"data: {line}" for line in (event.data or "").split("\n")]
        lines.append("")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def _ndjson_bytes(lines: list[str]) -> bytes:
    return "".join(line.replace("\n", " ") + "\n" for line in lines).encode(
        "utf-8", "surrogatepass"
    )


cuts = st.none() | st.sampled_from([httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout])
statuses = st.sampled_from([200, 200, 200, 200, 201, 204, 400, 401, 404, 408, 429, 500, 503, 529])
retry_afters = st.none() | st.sampled_from(
    [
        "2",
        "0",
        "-5",
        "nan",
        "inf",
        "1e400",
        "soon",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "Sun, 06 Nov 1994 08:49:37",
        "",
        "1" * 400,
    ]
)


@st.composite
def responses(draw, protocol: str):
    """(status, headers, body pieces, cut): a stream, an error body, or bytes of any kind."""
    if protocol == "ollama":
        body = _ndjson_bytes(draw(streams("ollama")))
        content_type = "application/x-ndjson"
    else:
        body = _sse_bytes(draw(streams(protocol)))
        content_type = "text/event-stream"
    body = draw(
        st.one_of(
            st.just(body),
            st.just(body),
            st.integers(0, max(len(body), 1)).map(lambda n: body[:n]),  # truncated
            st.binary(max_size=40),
            junk.map(lambda value: json.dumps({"error": value}).encode()),
        )
    )
    headers = {
        "content-type": draw(
            st.sampled_from([content_type] * 4 + ["text/html", "application/json"])
        )
    }
    retry_after = draw(retry_afters)
    if retry_after is not None:
        headers[draw(st.sampled_from(["retry-after", "retry-after-ms"]))] = retry_after
    split = draw(st.integers(0, len(body)))
    cut = draw(st.none() | st.none() | cuts)
    return draw(st.just(200) | statuses), headers, [body[:split], body[split:]], cut


def _handler(status, headers, parts, cut, failure):
    def handle(request: httpx.Request) -> httpx.Response:
        if failure:
            raise failure("refused", request=request)
        return httpx.Response(status, headers=headers, stream=_Body(parts, cut))

    return handle


def _outcome(result) -> tuple:
    if isinstance(result, ProviderError):
        check_error(result)
        return ("error", result.retryable, result.status, result.retry_after)
    check_events(result)
    return ("events", result)


def _sync(protocol: str, handle) -> list | ProviderError:
    module = PROTOCOLS[protocol]
    with httpx.Client(transport=httpx.MockTransport(handle)) as client:
        request = module.chat_request(api_key=KEY, **REQUEST)
        try:
            return list(
                transport.stream(
                    client, request, module.Decoder(PROVIDER, KEY), provider=PROVIDER, api_key=KEY
                )
            )
        except ProviderError as error:
            return error


def _async(protocol: str, handle) -> list | ProviderError:
    module = PROTOCOLS[protocol]

    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            request = module.chat_request(api_key=KEY, **REQUEST)
            stream = transport.astream(
                client, request, module.Decoder(PROVIDER, KEY), provider=PROVIDER, api_key=KEY
            )
            try:
                return [event async for event in stream]
            except ProviderError as error:
                return error

    return asyncio.run(run())


failures = (
    st.none()
    | st.none()
    | st.none()
    | st.sampled_from(
        [
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.RemoteProtocolError,
            httpx.UnsupportedProtocol,
        ]
    )
)


@settings(PROPERTY, max_examples=150)
@given(data=st.data(), protocol=st.sampled_from(sorted(PROTOCOLS)), failure=failures)
def test_drivers_parse_or_classify_and_agree(data, protocol, failure):
    status, headers, parts, cut = data.draw(responses(protocol), label="response")
    handle = _handler(status, headers, parts, cut, failure)
    sync, asynchronous = _outcome(_sync(protocol, handle)), _outcome(_async(protocol, handle))
    assert sync == asynchronous
    if status >= 400 and not failure and not cut:  # (a cut error body: a transport error)
        assert sync[0] == "error" and sync[2] == status


header_texts = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(value=retry_afters.filter(lambda value: value is not None) | header_texts)
@example(value="inf")  # was returned as inf: a retry scheduled at the end of time
@example(value="1e400")  # inf too
@example(value="99999999999")  # OverflowError scheduling the retry, years ahead
@settings(PROPERTY)
def test_retry_after_is_a_bounded_wait_or_none(value):
    for name in ("retry-after", "retry-after-ms"):
        seconds = parse_retry_after({name: value})
        assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= 86400)
