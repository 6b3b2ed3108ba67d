"""The simulator's batch clock and its edges, read through the official SDKs: validation and
progress, every validation error, cancel and expiry keeping what finished, paging, limits,
settings and observation. (``test_sdk_batches`` runs the happy paths.)"""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest

from addons.llm_thread.simulator import batches, reply_text

KEY = "sk-sim-batches-0123456789"
openai = pytest.importorskip("openai", reason="the openai SDK is not installed")
anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is not installed")


def _line(custom_id: str | None, prompt: str = "hi", **overrides) -> dict:
    row = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim-gpt", "messages": [{"role": "user", "content": prompt}]},
    }
    return {**row, **overrides}


def _jsonl(rows: list[dict]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(row).encode() + b"\n" for row in rows))


def _message_request(custom_id: str, prompt: str = "hi") -> dict:
    params = {
        "model": "claude-sim-large",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": prompt}],
    }
    return {"custom_id": custom_id, "params": params}


def _wait(read, done, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still {value}"
        time.sleep(0.01)
    return value


def _rows(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def openai_batches(make_simulator):
    """A keyed OpenAI simulator and an SDK client; ``run(rows)`` uploads and creates."""
    server = make_simulator("openai", api_key=KEY, batch_request_seconds=0.05)
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client:

        def run(rows: list[dict], endpoint: str = "/v1/chat/completions"):
            upload = client.files.create(file=("in.jsonl", _jsonl(rows)), purpose="batch")
            return client.batches.create(
                input_file_id=upload.id, endpoint=endpoint, completion_window="24h"
            )

        yield server, client, run


@pytest.fixture
def anthropic_client(make_simulator):
    server = make_simulator("anthropic", api_key=KEY, batch_request_seconds=0.05)
    with anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0) as client:
        yield server, client


# -- OpenAI -----------------------------------------------------------------------------------
def test_openai_batch_validates_then_counts_progress(openai_batches):
    server, client, run = openai_batches
    server.configure_batches(validation_seconds=0.1)
    batch = run([_line(f"r{index}", f"question {index}") for index in range(4)])
    assert (batch.status, batch.in_progress_at) == ("validating", None)

    partial = _wait(
        lambda: client.batches.retrieve(batch.id), lambda b: b.request_counts.completed >= 1
    )
    done = _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed")

    assert partial.status == "in_progress" and partial.request_counts.completed < 4
    assert done.request_counts.completed == 4 and done.error_file_id is None
    replies = {r["custom_id"]: r["response"]["body"] for r in _rows(client, done.output_file_id)}
    assert all(
        replies[f"r{i}"]["choices"][0]["message"]["content"] == reply_text(f"question {i}", 20)
        for i in range(4)
    )
    assert server.batches() == [{"id": batch.id, "status": "done", "total": 4, "done": 4}]
    assert (server.stats()["batches"], server.stats()["batch_requests"]) == (1, 4)


def test_openai_batch_fails_on_every_kind_of_bad_line(openai_batches):
    _, client, run = openai_batches
    upload = client.files.create(
        file=("in.jsonl", io.BytesIO(b"{not json\n" + _jsonl([_line("ok")]).read())),
        purpose="batch",
    )
    bad_json = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    bad_rows = run(
        [
            _line("a"),
            _line(None),
            _line("a"),
            _line("b", method="GET"),
            _line("c", url="/v1/embeddings"),
        ]
    )
    unsupported = run([_line("a", url="/v1/embeddings")], endpoint="/v1/embeddings")

    assert bad_json.status == "failed" and bad_json.failed_at is not None
    assert [(e.code, e.line) for e in bad_json.errors.data] == [("invalid_json_line", 1)]
    assert [(e.code, e.line) for e in bad_rows.errors.data] == [
        ("missing_required_parameter", 2),
        ("duplicate_custom_id", 3),
        ("invalid_method", 4),
        ("mismatched_endpoint", 5),
    ]
    assert [e.code for e in unsupported.errors.data] == ["unsupported_endpoint"]
    assert bad_rows.request_counts.total == 0 and bad_rows.output_file_id is None


def test_openai_batch_over_the_line_limit_fails(openai_batches, monkeypatch):
    _, _, run = openai_batches
    monkeypatch.setattr(batches, "OPENAI_LIMITS", (2, 200 * 1024 * 1024))

    batch = run([_line(f"r{index}") for index in range(3)])

    assert batch.status == "failed"
    assert batch.errors.data[0].code == "too_many_requests"
    assert "2 requests" in batch.errors.data[0].message


def test_openai_cancel_keeps_the_finished_requests(openai_batches):
    _, client, run = openai_batches
    batch = run([_line(f"r{index}") for index in range(10)])
    _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.request_counts.completed >= 2)

    cancelling = client.batches.cancel(batch.id)
    cancelled = client.batches.retrieve(batch.id)
    time.sleep(0.1)  # the clock stopped at the cancel: nothing more finishes
    later = client.batches.retrieve(batch.id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_ended(client, run))

    assert (cancelling.status, cancelled.status) == ("cancelling", "cancelled")
    assert cancelled.cancelling_at is not None and cancelled.cancelled_at is not None
    finished = {row["custom_id"] for row in _rows(client, cancelled.output_file_id)}
    assert len(finished) == cancelled.request_counts.completed >= 2
    assert later.request_counts.completed == cancelled.request_counts.completed
    assert cancelled.error_file_id is None


def _ended(client, run) -> str:
    """The id of a batch that completed (its one request done at once)."""
    batch = run([_line("only")])
    return _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed").id


def test_openai_expiry_splits_output_and_error_files(openai_batches):
    server, client, run = openai_batches
    server.configure_batches(request_seconds=0.1, window_seconds=0.25)
    batch = run([_line(f"r{index}", f"p{index}") for index in range(4)])

    expired = _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "expired")

    output = _rows(client, expired.output_file_id)
    errors = _rows(client, expired.error_file_id)
    assert sorted(row["custom_id"] for row in output) == ["r0", "r1"]
    assert sorted(row["custom_id"] for row in errors) == ["r2", "r3"]
    assert {row["error"]["code"] for row in errors} == {"batch_expired"}
    assert expired.expired_at is not None and expired.request_counts.completed == 2


def test_openai_lists_newest_first_in_pages(openai_batches):
    _, client, run = openai_batches
    ids = [run([_line("r")]).id for _ in range(3)]

    first = client.batches.list(limit=2)
    rest = client.batches.list(limit=2, after=first.data[-1].id)

    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    assert [b.id for b in rest.data] == ids[:1] and not rest.has_more


def test_openai_batch_endpoints_need_the_key(openai_batches):
    server, _, _ = openai_batches
    with openai.OpenAI(base_url=server.url, api_key="sk-wrong-000000", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.batches.list()
        with pytest.raises(openai.AuthenticationError):
            bad.files.create(file=("in.jsonl", _jsonl([_line("r")])), purpose="batch")


def test_openai_files_are_read_and_deleted(openai_batches):
    _, client, _ = openai_batches
    upload = client.files.create(file=("in.jsonl", _jsonl([_line("r")])), purpose="batch")

    assert client.files.retrieve(upload.id).bytes == upload.bytes
    assert client.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)


# -- Anthropic --------------------------------------------------------------------------------
def test_anthropic_counts_stay_processing_until_the_batch_expires(anthropic_client):
    server, client = anthropic_client
    server.configure_batches(request_seconds=0.1, window_seconds=0.25)
    prompts = ["one", "[sim:status=400 message=no-way] two", "three", "four"]
    batch = client.messages.batches.create(
        requests=[_message_request(f"r{i}", prompt) for i, prompt in enumerate(prompts)]
    )

    _wait(server.batches, lambda snapshot: snapshot[0]["done"] >= 1)
    running = client.messages.batches.retrieve(batch.id)
    early = httpx.get(
        f"{server.url}/messages/batches/{batch.id}/results", headers={"x-api-key": KEY}
    )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)
    ended = _wait(
        lambda: client.messages.batches.retrieve(batch.id),
        lambda b: b.processing_status == "ended",
    )
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}

    assert running.processing_status == "in_progress" and running.request_counts.processing == 4
    assert early.status_code == 400 and early.json()["error"]["type"] == "invalid_request_error"
    assert running.request_counts.succeeded == running.request_counts.errored == 0
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.expired) == (0, 1, 1, 2)
    assert results["r0"].message.content[0].text == reply_text("one", 20)
    assert results["r1"].error.error.type == "invalid_request_error"
    assert (results["r2"].type, results["r3"].type) == ("expired", "expired")
    assert ended.ended_at is not None and ended.results_url.endswith(f"{batch.id}/results")


def test_anthropic_cancel_ends_with_finished_and_canceled(anthropic_client):
    _, client = anthropic_client
    batch = client.messages.batches.create(
        requests=[_message_request(f"r{index}") for index in range(10)]
    )
    time.sleep(0.12)

    canceling = client.messages.batches.cancel(batch.id)
    ended = client.messages.batches.retrieve(batch.id)
    kinds = [r.result.type for r in client.messages.batches.results(batch.id)]

    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == kinds.count("succeeded") >= 1
    assert ended.request_counts.canceled == kinds.count("canceled") >= 1
    assert len(kinds) == 10


def test_anthropic_refuses_batches_over_the_limits(anthropic_client, monkeypatch):
    _, client = anthropic_client
    monkeypatch.setattr(batches, "ANTHROPIC_LIMITS", (2, 256 * 1024 * 1024))
    with pytest.raises(anthropic.BadRequestError, match="2 requests at most"):
        client.messages.batches.create(requests=[_message_request(f"r{i}") for i in range(3)])
    with pytest.raises(anthropic.BadRequestError, match="used twice"):
        client.messages.batches.create(requests=[_message_request("r"), _message_request("r")])

    monkeypatch.setattr(batches, "ANTHROPIC_LIMITS", (100_000, 100))
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.batches.create(requests=[_message_request("r", "x" * 200)])
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"


def test_anthropic_lists_pages_and_finds_no_unknown_batch(anthropic_client):
    _, client = anthropic_client
    ids = [client.messages.batches.create(requests=[_message_request("r")]).id for _ in range(3)]

    page = client.messages.batches.list(limit=2)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")

    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more
    assert page.last_id == ids[1]


def test_anthropic_batches_need_the_key(anthropic_client):
    server, _ = anthropic_client
    with (
        anthropic.Anthropic(base_url=server.root_url, api_key="wrong", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        bad.messages.batches.create(requests=[_message_request("r")])
    assert caught.value.body["error"]["message"] == "invalid x-api-key"


# -- settings ---------------------------------------------------------------------------------
def test_configure_batches_checks_its_settings(anthropic_client):
    server, _ = anthropic_client
    with pytest.raises(ValueError, match="Unknown batch setting"):
        server.configure_batches(speed=2)
    with pytest.raises(ValueError, match="cannot be negative"):
        server.configure_batches(request_seconds=-1)


def test_ollama_has_no_batch_endpoints(ollama_server):
    response = httpx.post(ollama_server.root_url + "/v1/messages/batches", json={})
    assert response.status_code in (404, 405)
