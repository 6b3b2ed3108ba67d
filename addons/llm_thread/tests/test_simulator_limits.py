"""The simulator's provider limits over real loopback HTTP: an rpm limit over a sliding
minute and a cap on generations in flight, each refused with the protocol's own 429 and a
Retry-After; the providers' rate-limit headers counting down; the record of accepted
requests (in the process and over HTTP); limits changed at runtime; stats reset.

What the lead's shared rate limits and adaptive concurrency rely on: a refused request
leaves no generation behind and uses up no queued fault."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime

import httpx
import pytest

from addons.llm_thread.simulator import SimulatorServer

REQUESTS = {
    "openai": ("/chat/completions", {"model": "sim-gpt"}),
    "anthropic": ("/messages", {"model": "claude-sim-large", "max_tokens": 100}),
    "ollama": ("/api/chat", {"model": "sim-llama"}),
}
OPENAI_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
ANTHROPIC_HEADERS = (
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
)
GO_DURATION = re.compile(r"(\d+h)?(\d+m)?\d+(\.\d+)?s|\d+ms")


def chat(server: SimulatorServer, text: str = "Hi", **fields) -> httpx.Response:
    path, body = REQUESTS[server.protocol]
    body = {**body, "messages": [{"role": "user", "content": text}], **fields}
    return httpx.post(server.url + path, json=body, timeout=5)


def assert_rate_limited(response: httpx.Response, protocol: str) -> None:
    """The protocol's own 429 body."""
    assert response.status_code == 429
    body = response.json()
    if protocol == "openai":
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert body["error"]["type"] == "requests"
        assert body["error"]["message"]
    elif protocol == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == "rate_limit_error"
    else:
        assert isinstance(body["error"], str) and body["error"]


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_request_over_the_rpm_limit_gets_the_protocols_429(make_simulator, protocol, stream):
    server = make_simulator(protocol, rpm_limit=3, tokens=3)

    answers = [chat(server, stream=stream) for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert_rate_limited(answers[3], protocol)
    # The window frees a slot when the first request is a minute old: about 60 s from now.
    assert 55 <= int(answers[3].headers["retry-after"]) <= 60
    stats = server.wait_idle()
    assert (stats["requests"], stats["completed"], stats["rate_limited"]) == (4, 3, 1)
    assert stats["faults"] == 0
    assert len(server.request_times()) == 3


def test_a_refused_request_does_not_use_up_a_queued_fault(make_simulator):
    server = make_simulator("openai", rpm_limit=1)
    assert chat(server).status_code == 200
    server.push_fault(status=503)

    assert chat(server).status_code == 429
    server.configure_limits(rpm_limit=None)
    assert chat(server).status_code == 503  # the fault, kept for the next accepted request
    assert chat(server).status_code == 200


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_max_in_flight_refuses_while_slow_streams_run(make_simulator, protocol):
    server = make_simulator(protocol, max_in_flight=2, tokens=4, token_delay=0.1)
    path, body = REQUESTS[protocol]
    body = {**body, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    started = threading.Barrier(3)
    finished: list[int] = []

    def slow_stream() -> None:
        with httpx.stream("POST", server.url + path, json=body, timeout=5) as response:
            started.wait(timeout=5)  # both streams are open: their generations run
            response.read()
            finished.append(response.status_code)

    threads = [threading.Thread(target=slow_stream) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait(timeout=5)
    refused = chat(server, stream=True)
    for thread in threads:
        thread.join(timeout=5)

    assert_rate_limited(refused, protocol)
    assert refused.headers["retry-after"] == "1"
    assert finished == [200, 200]
    server.wait_idle()
    assert chat(server, stream=True).status_code == 200  # the slots are free again
    stats = server.wait_idle()
    assert (stats["completed"], stats["rate_limited"], stats["max_in_flight"]) == (3, 1, 2)


def test_a_non_streamed_generation_holds_its_slot_until_it_answers(make_simulator):
    server = make_simulator("ollama", max_in_flight=1, tokens=3, token_delay=0.15)
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(chat(server, stream=False)))
    thread.start()
    deadline = time.monotonic() + 5
    while server.stats()["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)

    assert chat(server, stream=False).status_code == 429
    thread.join(timeout=5)
    assert answers[0].status_code == 200
    assert chat(server, stream=False).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_openai_headers_count_down(make_simulator, stream):
    server = make_simulator("openai", rpm_limit=3, tokens=2)

    answers = [chat(server, stream=stream) for _ in range(4)]

    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "3"
        assert GO_DURATION.fullmatch(answer.headers["x-ratelimit-reset-requests"])
    remaining = [answer.headers["x-ratelimit-remaining-requests"] for answer in answers]
    assert remaining == ["2", "1", "0", "0"]
    # The window is full again a minute after the last accepted request.
    assert re.fullmatch(r"59(\.\d+)?s|1m0s", answers[2].headers["x-ratelimit-reset-requests"])
    assert not any(name.startswith("anthropic-") for name in answers[0].headers)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_headers_count_down(make_simulator, stream):
    server = make_simulator("anthropic", rpm_limit=2, tokens=2)
    before = time.time()

    answers = [chat(server, stream=stream) for _ in range(3)]

    assert [a.headers["anthropic-ratelimit-requests-limit"] for a in answers] == ["2"] * 3
    remaining = [a.headers["anthropic-ratelimit-requests-remaining"] for a in answers]
    assert remaining == ["1", "0", "0"]
    reset = answers[1].headers["anthropic-ratelimit-requests-reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reset)
    moment = datetime.fromisoformat(reset).timestamp()
    assert before + 59 <= moment <= time.time() + 61
    assert not any(name.startswith("x-ratelimit-") for name in answers[0].headers)


def test_no_rate_limit_headers_without_an_rpm_limit(make_simulator):
    server = make_simulator("openai", max_in_flight=5)
    headers = chat(server).headers
    assert not any(name.startswith("x-ratelimit-") for name in headers)


def test_injected_errors_carry_the_headers_and_use_a_slot(make_simulator):
    server = make_simulator("openai", rpm_limit=2)

    failed = chat(server, "Hi [sim:status=500]")

    assert failed.status_code == 500
    assert failed.headers["x-ratelimit-remaining-requests"] == "1"
    assert chat(server).status_code == 200
    assert chat(server).status_code == 429


def test_request_times_in_process_and_over_http(make_simulator):
    server = make_simulator("anthropic", rpm_limit=2)
    before = time.time()

    for _ in range(3):
        chat(server)
    after = time.time()

    times = server.request_times()
    assert len(times) == 2  # the refused third is not an accepted request
    assert before <= times[0] <= times[1] <= after
    assert httpx.get(server.root_url + "/_sim/requests").json() == {"times": times}


def test_request_times_leave_out_refused_keys_and_bodies(make_simulator):
    server = make_simulator("openai", api_key="sk-sim-key")
    path, body = REQUESTS["openai"]

    assert httpx.post(server.url + path, json=body).status_code == 401
    assert chat(server).status_code == 401  # no key
    assert server.request_times() == []
    assert server.stats()["requests"] == 2


def test_configure_limits_at_runtime(make_simulator):
    server = make_simulator("openai", tokens=2)
    assert chat(server).status_code == 200
    assert "x-ratelimit-limit-requests" not in chat(server).headers

    server.configure_limits(rpm_limit=3)  # the two requests made count in the window

    answer = chat(server)
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    assert chat(server).status_code == 429
    server.configure_limits(rpm_limit=10)
    assert chat(server).headers["x-ratelimit-remaining-requests"] == "6"  # 4 accepted
    server.configure_limits(max_in_flight=1)  # the rpm limit stays
    assert chat(server).headers["x-ratelimit-limit-requests"] == "10"
    server.configure_limits(rpm_limit=None, max_in_flight=None)
    assert all(chat(server).status_code == 200 for _ in range(10))


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_limits_must_be_positive_integers(value):
    with pytest.raises(ValueError, match="positive integer"):
        SimulatorServer("openai", rpm_limit=value)
    server = SimulatorServer("openai")
    with pytest.raises(ValueError, match="max_in_flight"):
        server.configure_limits(max_in_flight=value)


def test_reset_stats_clears_the_record_but_not_the_window(make_simulator):
    server = make_simulator("openai", rpm_limit=2)
    chat(server), chat(server), chat(server)
    assert server.stats()["rate_limited"] == 1

    server.reset_stats()

    assert server.request_times() == []
    assert server.stats()["rate_limited"] == 0
    assert chat(server).status_code == 429  # the provider's minute is not ours to reset
    assert httpx.post(server.root_url + "/_sim/reset").json()["rate_limited"] == 0
    assert httpx.get(server.root_url + "/_sim/requests").json() == {"times": []}


def test_limits_do_not_apply_to_the_models_endpoint(make_simulator):
    server = make_simulator("openai", rpm_limit=1)
    chat(server)
    assert chat(server).status_code == 429
    assert httpx.get(server.url + "/models").status_code == 200
