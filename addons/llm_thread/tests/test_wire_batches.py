"""The batch clients (wire/openai_batch.py, wire/anthropic_batch.py) against the simulator
over real loopback HTTP: submitted, polled to their end, every result matched to its request
by custom_id whatever the order; errored, expired and cancelled requests; calls that fail
classified like streamed ones."""

from __future__ import annotations

import time

import httpx
import pytest

from addons.llm_thread.simulator import reply_text
from addons.llm_thread.wire import BATCH_PROTOCOLS, openai_batch
from addons.llm_thread.wire.batch import BatchRequest, BatchState
from addons.llm_thread.wire.errors import ProviderError

KEY = "sk-batch-0123456789abcdef"
MODULES = BATCH_PROTOCOLS
MODELS = {"openai": "sim-gpt", "anthropic": "claude-sim-large"}


@pytest.fixture(params=list(MODULES))
def protocol(request) -> str:
    return request.param


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as client:
        yield client


def _settings(server) -> dict:
    return {"provider": "batcher", "api_base": server.url, "api_key": KEY}


def _requests(protocol: str, prompts: list[str]) -> list[BatchRequest]:
    return [
        BatchRequest(f"job-{index}", MODELS[protocol], [{"role": "user", "content": prompt}])
        for index, prompt in enumerate(prompts)
    ]


def _submit(protocol, client, server, requests, **extra) -> BatchState:
    module = MODULES[protocol]
    lines = [module.request_line(request) for request in requests]
    return module.submit(client, lines=lines, **_settings(server), **extra)


def _until_ended(protocol, client, server, state: BatchState, timeout: float = 5) -> BatchState:
    module, deadline = MODULES[protocol], time.monotonic() + timeout
    while not state.ended:
        assert time.monotonic() < deadline, f"batch {state.id} still {state.status}"
        time.sleep(0.02)
        state = module.retrieve(client, batch_id=state.id, **_settings(server))
    return state


def test_twenty_requests_come_back_matched_by_custom_id(protocol, client, make_simulator):
    server = make_simulator(protocol, api_key=KEY, batch_request_seconds=0.005)
    prompts = [f"Question number {index} about queues" for index in range(20)]
    state = _submit(protocol, client, server, _requests(protocol, prompts))
    assert not state.ended and state.id

    state = _until_ended(protocol, client, server, state)
    results = list(MODULES[protocol].results(client, state=state, **_settings(server)))

    assert state.status == ("completed" if protocol == "openai" else "ended")
    assert sorted(r.custom_id for r in results) == sorted(f"job-{i}" for i in range(20))
    for result in results:
        index = int(result.custom_id.removeprefix("job-"))
        assert result.outcome == "succeeded"
        assert result.text == reply_text(prompts[index], 20)
        assert result.usage.completion_tokens == 20
        assert result.finish.reason in ("stop", "end_turn")
    assert [r.custom_id for r in results] != [f"job-{i}" for i in range(20)]  # any order


def test_an_errored_request_is_its_own_classified_error(protocol, client, make_simulator):
    server = make_simulator(protocol, api_key=KEY)
    prompts = ["fine", "[sim:status=400 message=bad-prompt] not fine", "[sim:status=503] later"]
    state = _until_ended(
        protocol, client, server, _submit(protocol, client, server, _requests(protocol, prompts))
    )

    results = {
        r.custom_id: r for r in MODULES[protocol].results(client, state=state, **_settings(server))
    }

    assert results["job-0"].outcome == "succeeded"
    assert results["job-1"].outcome == "errored"
    assert "bad-prompt" in results["job-1"].error.message
    assert not results["job-1"].error.retryable
    assert results["job-2"].outcome == "errored" and results["job-2"].error.retryable


def test_an_expired_batch_keeps_what_finished(protocol, client, make_simulator):
    server = make_simulator(
        protocol, api_key=KEY, batch_request_seconds=0.1, batch_window_seconds=0.25
    )
    prompts = [f"prompt {index}" for index in range(6)]
    state = _until_ended(
        protocol, client, server, _submit(protocol, client, server, _requests(protocol, prompts))
    )

    results = list(MODULES[protocol].results(client, state=state, **_settings(server)))
    outcomes = sorted(r.outcome for r in results)

    assert state.status == ("expired" if protocol == "openai" else "ended")
    assert outcomes.count("succeeded") in (1, 2) and outcomes.count("expired") >= 4
    assert len(results) == 6


def test_a_cancelled_batch_ends_cancelled(protocol, client, make_simulator):
    server = make_simulator(protocol, api_key=KEY, batch_request_seconds=0.2)
    module = MODULES[protocol]
    state = _submit(protocol, client, server, _requests(protocol, [f"p{i}" for i in range(5)]))

    cancelling = module.cancel(client, batch_id=state.id, **_settings(server))
    assert cancelling.status in ("cancelling", "canceling")
    state = _until_ended(protocol, client, server, cancelling)

    assert state.status == ("cancelled" if protocol == "openai" else "ended")
    results = list(module.results(client, state=state, **_settings(server)))
    succeeded = [r for r in results if r.outcome == "succeeded"]
    assert len(succeeded) < 5


def test_openai_finds_a_batch_by_its_metadata(client, make_simulator):
    server = make_simulator("openai", api_key=KEY, batch_request_seconds=0.5)
    key = {"llmjobs_submission": "abc123"}
    _submit("openai", client, server, _requests("openai", ["other"]))
    mine = _submit("openai", client, server, _requests("openai", ["mine"]), metadata=key)

    found = openai_batch.find(client, metadata=key, **_settings(server))

    assert found is not None and found.id == mine.id
    assert (
        openai_batch.find(client, metadata={"llmjobs_submission": "nope"}, **_settings(server))
        is None
    )


def test_a_refused_call_is_a_classified_error_without_the_key(protocol, client, make_simulator):
    server = make_simulator(protocol, api_key="sk-the-right-one-0000")
    with pytest.raises(ProviderError) as raised:
        _submit(protocol, client, server, _requests(protocol, ["hello"]))

    assert raised.value.status == 401 and not raised.value.retryable
    assert KEY not in str(raised.value)


def test_request_lines_carry_the_body_of_a_request_not_streamed(protocol):
    line = MODULES[protocol].request_line(
        BatchRequest(
            "job-7", MODELS[protocol], [{"role": "user", "content": "hi"}], {"max_tokens": 5}
        )
    )

    assert line.endswith(b"\n") and b'"custom_id":"job-7"' in line
    assert b'"stream"' not in line and b'"max_tokens":5' in line
