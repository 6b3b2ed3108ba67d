"""The stream log: a follower resumes from a sequence number, a new attempt after a killed
one shows as a restart, the final body equals the log, and one worker carries 200 paced
streams with none failed; a first piece logged with its attempt's end."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from addons.llm_generation_job.follow import follow_job, wait_finished
from addons.llm_generation_job.store import Completion, JobStore, Piece
from addons.llm_thread.simulator import reply_text
from tests.statements import statements

from .conftest import make_provider, streaming

SLOW = "[sim:tokens=40 token_delay=0.02] tell me"


def log_of(env, job_id):
    chunks = env["llm.generation.job.chunk"].search([("job_id", "=", job_id)], order="seq")
    return chunks.read(["seq", "kind", "attempt", "content"])


def text_after_last_restart(log):
    restarts = [i for i, row in enumerate(log) if row["kind"] == "restart"]
    start = restarts[-1] + 1 if restarts else 0
    return "".join(row["content"] or "" for row in log[start:])


def test_a_follower_resumes_from_a_sequence_number(registry, runner, sim_thread):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        updates = list(thread.generate_response(SLOW, use_queue=True))
        job_id = thread.generation_job_ids.id
    chunks = [u for u in updates if u["type"] == "message_chunk"]
    seqs = [u["seq"] for u in chunks]
    assert len(chunks) > 2 and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    middle = seqs[len(seqs) // 2]
    with registry.environment() as env:  # a client back after a disconnection, at `middle`
        resumed = list(follow_job(env, job_id, after_seq=middle))
        log = log_of(env, job_id)
        body = env["llm.generation.job"].browse(job_id).output_message_id.body
    again = [u for u in resumed if u["type"] == "message_chunk"]
    assert [u["seq"] for u in again] == [s for s in seqs if s > middle]
    before = "".join(u["content"] for u in chunks if u["seq"] <= middle)
    assert before + "".join(u["content"] for u in again) == body == reply_text(SLOW, 40)
    assert resumed[-1]["type"] == "done"
    assert text_after_last_restart(log) == body  # the final body equals the log
    assert [row["seq"] for row in log] == list(range(1, len(log) + 1))


def test_a_follower_sees_a_retry_that_happened_before_it_looked(registry, sim_thread):
    """A retry due at once (no delay) can be done before the follower looks again: it must
    still show as a retry, not as a reply that silently started over."""
    with registry.environment() as env:
        job = env["llm.generation.job"].create(
            {"thread_id": sim_thread, "generation_inputs": {"prompt": "hi"}}
        )
        job.action_queue()
        job_id, provider_id = job.id, job.provider_id.id
        env["llm.generation.queue"]._get_or_create_queue(provider_id).retry_delay_minutes = 0
    with registry.environment(readonly=True) as env:
        updates = follow_job(env, job_id)
        assert next(updates)["state"] == "queued"
    with registry.environment() as env:
        store = JobStore(env)
        [lease] = store.claim(provider_id, "worker-1")
        assert store.fail(lease, "HTTP 503 from the provider", retryable=True)
    with registry.environment() as env:
        assert JobStore(env).retry_due() == 1
        [lease] = JobStore(env).claim(provider_id, "worker-2")
    retrying = next(updates)
    assert (retrying["type"], retrying["state"]) == ("job_status", "retrying")
    assert "HTTP 503 from the provider" in retrying["message"]
    assert "Retrying at" in retrying["message"]
    assert next(updates)["state"] == "running"
    updates.close()


def test_a_new_attempt_after_a_killed_one_shows_as_a_restart(
    registry, start_workers, openai_server
):
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id)
        thread = env["llm.thread"].create(
            {"name": "t", "provider_id": provider.id, "model_id": model.id}
        )
        job = env["llm.generation.job"].create(
            {
                "thread_id": thread.id,
                "generation_inputs": {"prompt": "[sim:tokens=60 token_delay=0.05] x"},
            }
        )
        job.action_queue()
        job_id = job.id
    [victim] = start_workers(1, lease=3)
    deadline = time.monotonic() + 30
    while True:  # the victim streams: its pieces are in the log
        with registry.environment(readonly=True) as env:
            if streaming(env, [job_id]):
                break
        assert time.monotonic() < deadline, "the worker never streamed"
        time.sleep(0.05)
    victim.kill()
    start_workers(1, lease=3)
    wait_finished(registry, [job_id], timeout=60)
    with registry.environment() as env:
        updates = list(follow_job(env, job_id))  # a follower from the beginning
        log = log_of(env, job_id)
        job = env["llm.generation.job"].browse(job_id)
        body = job.output_message_id.body
        assert (job.state, job.retry_count) == ("completed", 1)
        assert job.attempt_ids.mapped("outcome") == ["lost", "completed"]
    kinds = [row["kind"] for row in log]
    assert kinds.count("restart") == 1 and kinds[0] == "text"  # attempt 1 logged, then over
    [restart] = [row for row in log if row["kind"] == "restart"]
    assert restart["attempt"] == 2
    assert {row["attempt"] for row in log if row["seq"] > restart["seq"]} == {2}
    assert (
        text_after_last_restart(log) == body == reply_text("[sim:tokens=60 token_delay=0.05] x", 60)
    )
    restarts = [u for u in updates if u["type"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["attempt"] == 2
    after = updates[updates.index(restarts[0]) + 1 :]
    assert "".join(u["content"] for u in after if u["type"] == "message_chunk") == body


@pytest.mark.slow
def test_one_worker_carries_200_paced_streams(registry, start_workers, openai_server):
    prompt = "[sim:tokens=30 token_delay=0.02 first_token_delay=0.3] go"
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            {"max_concurrent_jobs": 200}
        )
        threads = env["llm.thread"].create(
            [
                {"name": f"t{n}", "provider_id": provider.id, "model_id": model.id}
                for n in range(200)
            ]
        )
        jobs = env["llm.generation.job"].create(
            [{"thread_id": t.id, "generation_inputs": {"prompt": prompt}} for t in threads]
        )
        openai_server.reset_stats()
        for job in jobs:
            job.action_queue()
        job_ids = jobs.ids
    start_workers(1, concurrency=200)
    wait_finished(registry, job_ids, timeout=120)
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"completed"}
        assert set(jobs.mapped("retry_count")) == {0}
        assert set(jobs.mapped("attempt_ids.outcome")) == {"completed"}
        assert set(jobs.mapped("output_message_id.body")) == {reply_text(prompt, 30)}
    assert openai_server.stats()["max_in_flight"] > 100  # they really ran side by side


def test_cleanup_drops_the_logs_of_long_finished_jobs_and_keeps_their_replies(
    registry, runner, sim_thread
):
    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        first = list(thread.generate_response(SLOW, use_queue=True))
        second = list(thread.generate_response(SLOW, use_queue=True))
        assert first[-1]["type"] == second[-1]["type"] == "done"
        old, recent = thread.generation_job_ids.sorted("id")
        assert log_of(env, old.id) and log_of(env, recent.id)
        two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        env.cr.execute(  # finished two days ago (completed_at is the store's to write)
            sa.text("UPDATE llm_generation_job SET completed_at = :at WHERE id = :id"),
            {"at": two_days_ago, "id": old.id},
        )
    with registry.environment() as env:
        assert env["llm.generation.job"].cleanup_old_jobs(days=7, log_hours=24) == 0
    with registry.environment() as env:
        jobs = env["llm.generation.job"]
        assert not log_of(env, old.id)  # its log went,
        assert jobs.browse(old.id).output_message_id.body == reply_text(SLOW, 40)  # not its reply
        assert text_after_last_restart(log_of(env, recent.id)) == reply_text(SLOW, 40)


def test_a_first_piece_stamps_its_attempt_in_one_update_without_reading_it(env, registry):
    """The writer's flush of first pieces writes each attempt's first_token_at and time to
    first token from the start its lease holds: one UPDATE, no read of the attempts."""
    provider, model = make_provider(env)
    values = {"provider_id": provider.id, "model_id": model.id}
    threads = env["llm.thread"].create([{"name": f"t{n}", **values} for n in range(2)])
    jobs = env["llm.generation.job"].create([{"thread_id": t.id} for t in threads])
    for job in jobs:
        job.action_queue()
    store = JobStore(env)
    leases = store.claim(provider.id, "w:1")
    starts = [store.start_reply(lease) for lease in leases]
    pieces = [
        Piece(lease, start.seq + 1, start.attempt, "hi", first=True)
        for lease, start in zip(leases, starts, strict=True)
    ]
    env.invalidate_all()  # as the writer's own transaction finds them: nothing cached
    with statements(registry) as seen:
        store.append(pieces)
    on_attempts = [s for s in seen if "llm_generation_job_attempt" in s]
    assert len(on_attempts) == 1 and on_attempts[0].startswith("UPDATE"), on_attempts
    attempts = env["llm.generation.job.attempt"].browse([lease.attempt_id for lease in leases])
    attempts.invalidate_recordset()
    for attempt in attempts:
        assert attempt.first_token_at >= attempt.started_at
        elapsed = (attempt.first_token_at - attempt.started_at).total_seconds()
        assert attempt.time_to_first_token == pytest.approx(elapsed)


def test_a_first_piece_that_comes_with_the_end_is_stamped_by_the_ends_update(env, registry):
    """A short reply's first piece often comes in the flush that completes it: its attempt's
    first token is stamped by the UPDATE that ends it, not by one of its own; an attempt whose
    first piece was logged before keeps that stamp."""
    provider, model = make_provider(env)
    values = {"provider_id": provider.id, "model_id": model.id}
    threads = env["llm.thread"].create([{"name": f"t{n}", **values} for n in range(3)])
    jobs = env["llm.generation.job"].create([{"thread_id": t.id} for t in threads])
    for job in jobs:
        job.action_queue()
    store = JobStore(env)
    leases = store.claim(provider.id, "w:1")
    starts = [store.start_reply(lease) for lease in leases]
    early, *late = [
        Piece(lease, start.seq + 1, start.attempt, "hi", first=True)
        for lease, start in zip(leases, starts, strict=True)
    ]
    store.append([early])
    stamped_early = env["llm.generation.job.attempt"].browse(early.lease.attempt_id).first_token_at
    reply = {"body": "hi", "state": "done"}
    tails = [[Piece(early.lease, early.seq + 1, early.attempt, "!")], *([p] for p in late)]
    completions = [
        Completion(lease, reply, tail) for lease, tail in zip(leases, tails, strict=True)
    ]
    with statements(registry) as seen:
        assert store.complete_many(completions) == set(leases)
    attempts = env["llm.generation.job.attempt"].browse([lease.attempt_id for lease in leases])
    attempts.invalidate_recordset()
    first, *others = attempts
    assert first.first_token_at == stamped_early and first.ended_at > stamped_early
    for attempt in others:
        assert attempt.first_token_at == attempt.ended_at
        elapsed = (attempt.ended_at - attempt.started_at).total_seconds()
        assert attempt.time_to_first_token == pytest.approx(elapsed)
    # One UPDATE for the attempt whose first token came before, one for the two stamped now.
    updates = [s for s in seen if s.startswith("UPDATE llm_generation_job_attempt")]
    assert len(updates) == 2 and "first_token_at" in updates[1]
    assert len([s for s in seen if s.startswith("INSERT INTO llm_generation_usage")]) == 1


def test_a_look_at_a_streaming_job_reads_the_job_and_its_new_pieces_only(registry):
    """While the job streams, a follower's look reads no attempt and no message: those are as
    its previous look saw them; the end reads the message again, with its final body."""
    with registry.environment() as env:
        provider, model = make_provider(env)
        thread = env["llm.thread"].create(
            {"name": "t", "provider_id": provider.id, "model_id": model.id}
        )
        job = env["llm.generation.job"].create({"thread_id": thread.id})
        job.action_queue()
        job_id, provider_id = job.id, provider.id
    with registry.environment() as env:
        store = JobStore(env)
        [lease] = store.claim(provider_id, "w:1")
        start = store.start_reply(lease)
        follower = follow_job(env, job_id)
    assert next(follower)["state"] == "running"
    assert next(follower)["type"] == "message_create"
    words = ["Hello", " there", "!"]
    with registry.environment() as env:  # the first piece
        JobStore(env).append([Piece(lease, start.seq + 1, start.attempt, words[0], first=True)])
    assert next(follower)["content"] == words[0]
    for number, word in enumerate(words[1:], start=2):
        with registry.environment() as env:
            JobStore(env).append([Piece(lease, start.seq + number, start.attempt, word)])
        with statements(registry) as seen:
            update = next(follower)
        assert (update["type"], update["content"]) == ("message_chunk", word)
        tables = ("llm_generation_job_attempt", "llm_message")
        assert not [s for s in seen if any(table in s for table in tables)], seen
        assert any("llm_generation_job_chunk" in s for s in seen)
    with registry.environment() as env:
        assert JobStore(env).complete(lease, {"body": "".join(words), "state": "done"})
    rest = list(follower)
    assert [u["type"] for u in rest] == ["message_update", "done"]
    assert rest[0]["message"]["body"] == "Hello there!"
