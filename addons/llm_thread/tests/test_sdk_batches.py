"""The official SDKs drive the simulator's batch APIs as they drive the real ones: OpenAI's
files and batches, Anthropic's message batches, each to its end, with their errors."""

from __future__ import annotations

import io
import json
import time

import pytest

from addons.llm_thread.simulator import reply_text

KEY = "sk-sdk-batches-0123456789"
openai = pytest.importorskip("openai", reason="the openai SDK is not installed")
anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is not installed")


def _lines(prompts: list[str]) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{index}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "sim-gpt", "messages": [{"role": "user", "content": prompt}]},
            }
        ).encode()
        + b"\n"
        for index, prompt in enumerate(prompts)
    )


def _wait(read, done, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still {value}"
        time.sleep(0.02)
    return value


def test_openai_sdk_runs_a_batch_to_its_output_file(make_simulator):
    server = make_simulator("openai", api_key=KEY, batch_request_seconds=0.01)
    prompts = ["first question", "[sim:status=400 message=refused-here] second", "third one"]
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client:
        upload = client.files.create(
            file=("in.jsonl", io.BytesIO(_lines(prompts))), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"owner": "tests"},
        )
        assert batch.status in ("validating", "in_progress")

        batch = _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed")
        output = [
            json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()
        ]
        errors = [
            json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()
        ]
        listed = client.batches.list(limit=10)

    assert (batch.request_counts.total, batch.request_counts.completed) == (3, 2)
    assert batch.request_counts.failed == 1 and batch.metadata == {"owner": "tests"}
    replies = {row["custom_id"]: row["response"]["body"] for row in output}
    assert replies["r0"]["choices"][0]["message"]["content"] == reply_text(prompts[0], 20)
    assert replies["r2"]["choices"][0]["message"]["content"] == reply_text(prompts[2], 20)
    assert errors[0]["custom_id"] == "r1" and errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["message"] == "refused-here"
    assert [b.id for b in listed.data] == [batch.id]


def test_openai_sdk_sees_a_bad_input_file_fail_and_a_cancel(make_simulator):
    server = make_simulator("openai", api_key=KEY, batch_request_seconds=0.5)
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client:
        bad = client.files.create(file=("bad.jsonl", io.BytesIO(b"not json\n")), purpose="batch")
        failed = client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        good = client.files.create(
            file=("in.jsonl", io.BytesIO(_lines(["a", "b"]))), purpose="batch"
        )
        running = client.batches.create(
            input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        cancelling = client.batches.cancel(running.id)
        cancelled = client.batches.retrieve(running.id)
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_nope")

    assert failed.status == "failed" and failed.errors.data[0].line == 1
    assert (cancelling.status, cancelled.status) == ("cancelling", "cancelled")


def test_openai_sdk_sees_an_expired_batch(make_simulator):
    server = make_simulator(
        "openai", api_key=KEY, batch_request_seconds=0.1, batch_window_seconds=0.15
    )
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client:
        upload = client.files.create(
            file=("in.jsonl", io.BytesIO(_lines(["a", "b", "c"]))), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "expired")
        errors = [
            json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()
        ]

    assert batch.request_counts.completed == 1
    assert sorted(row["error"]["code"] for row in errors) == ["batch_expired", "batch_expired"]


def test_anthropic_sdk_runs_a_message_batch(make_simulator):
    server = make_simulator("anthropic", api_key=KEY, batch_request_seconds=0.01)
    prompts = ["hello there", "[sim:status=400 message=nope] again", "one more"]
    requests = [
        {
            "custom_id": f"r{index}",
            "params": {
                "model": "claude-sim-large",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": prompt}],
            },
        }
        for index, prompt in enumerate(prompts)
    ]
    with anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0) as client:
        batch = client.messages.batches.create(requests=requests)
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 3 and batch.request_counts.succeeded == 0

        batch = _wait(
            lambda: client.messages.batches.retrieve(batch.id),
            lambda b: b.processing_status == "ended",
        )
        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
        deleted = client.messages.batches.delete(batch.id)

    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (2, 1)
    assert results["r0"].type == "succeeded"
    assert results["r0"].message.content[0].text == reply_text(prompts[0], 20)
    assert results["r1"].type == "errored" and results["r1"].error.error.message == "nope"
    assert deleted.type == "message_batch_deleted"


def test_anthropic_sdk_cancels_and_is_refused_without_key(make_simulator):
    server = make_simulator("anthropic", api_key=KEY, batch_request_seconds=0.5)
    request = {
        "custom_id": "only",
        "params": {
            "model": "claude-sim-large",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
    with anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0) as client:
        batch = client.messages.batches.create(requests=[request, {**request, "custom_id": "two"}])
        canceling = client.messages.batches.cancel(batch.id)
        ended = client.messages.batches.retrieve(batch.id)
        results = [r.result.type for r in client.messages.batches.results(batch.id)]
    with (
        anthropic.Anthropic(
            base_url=server.root_url, api_key="sk-wrong-key-000", max_retries=0
        ) as bad,
        pytest.raises(anthropic.AuthenticationError),
    ):
        bad.messages.batches.list()

    assert (canceling.processing_status, ended.processing_status) == ("canceling", "ended")
    assert results == ["canceled", "canceled"] and ended.request_counts.canceled == 2
