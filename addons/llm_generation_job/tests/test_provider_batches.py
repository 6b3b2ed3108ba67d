"""Jobs in provider batches (OpenAI Batch, Anthropic Message Batches), on both databases,
against the loopback simulator over real HTTP, as an ordinary user creates them: submitted as
one batch, polled, their results applied once each on the right thread; errored requests,
an expired batch, a cancelled job, overlapping status checks, a submitter that died."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from addons.llm_generation_job import batches
from addons.llm_generation_job.store import JobStore
from addons.llm_thread.simulator import reply_text

KEY = "sk-batch-jobs-5e8d1f0a2b"
TOKENS = 20


@pytest.fixture(params=["openai", "anthropic"])
def protocol(request) -> str:
    return request.param


@pytest.fixture
def setup(registry, users, protocol, make_simulator):
    """``setup(count, prompts=None, **queue_values)``: a simulator of ``protocol``, a
    provider on it whose queue batches unattended jobs, and ``count`` threads of Alice's, each
    with an unattended job queued; returns (server, provider id, job ids, prompts)."""

    def make(count: int, prompts=None, server_settings=None, **queue_values):
        server = make_simulator(protocol, api_key=KEY, tokens=TOKENS, **(server_settings or {}))
        prompts = prompts or [f"Question {index} for the batch" for index in range(count)]
        with registry.environment() as env:
            provider = env["llm.provider"].create(
                {"name": "batcher", "service": protocol, "api_base": server.url, "api_key": KEY}
            )
            model = env["llm.model"].create(
                {"name": "sim-model", "provider_id": provider.id, "model_use": "chat"}
            )
            env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
                {
                    "batch_unattended": True,
                    "batch_max_size": count,
                    "batch_max_wait_seconds": 3600,
                    **queue_values,
                }
            )
            threads = env["llm.thread"].create(
                [
                    {
                        "name": f"Thread {index}",
                        "user_id": users["alice"],
                        "provider_id": provider.id,
                        "model_id": model.id,
                    }
                    for index in range(len(prompts))
                ]
            )
            provider_id, thread_ids = provider.id, threads.ids
        job_ids = []
        with registry.environment(user=users["alice"]) as env:
            for thread_id, prompt in zip(thread_ids, prompts, strict=True):
                job = env["llm.generation.job"].create(
                    {
                        "thread_id": thread_id,
                        "interactive": False,
                        "generation_inputs": {"prompt": prompt},
                    }
                )
                job.action_queue()
                job_ids.append(job.id)
        return server, provider_id, job_ids, prompts

    return make


def status_round(registry) -> None:
    """One round of the status cron, as a worker's scheduler runs it."""
    with registry.environment() as env:
        env["llm.generation.queue"]._check_job_statuses()


def until_finished(registry, job_ids, timeout=20.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        status_round(registry)
        with registry.environment(readonly=True) as env:
            states = {job.id: job.state for job in env["llm.generation.job"].browse(job_ids)}
        if all(state not in ("queued", "running") for state in states.values()):
            return states
        assert time.monotonic() < deadline, f"still active: {states}"
        time.sleep(0.05)


def replies(env, job) -> list:
    return env["llm.message"].search(
        [("thread_id", "=", job.thread_id.id), ("llm_role", "=", "assistant")]
    )


def test_twenty_unattended_jobs_complete_as_one_batch(registry, setup, protocol):
    server, _, job_ids, prompts = setup(20, server_settings={"batch_request_seconds": 0.01})
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("execution_mode")) == {"batch"}

    status_round(registry)  # a full batch goes at once
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"running"}
        assert len(jobs.mapped("batch_id")) == 1
        batch = jobs.mapped("batch_id")
        assert batch.state == "running" and batch.external_id and batch.request_count == 20
    assert [b["total"] for b in server.batches()] == [20]

    assert set(until_finished(registry, job_ids).values()) == {"completed"}
    with registry.environment(user=None) as env:
        for job, prompt in zip(env["llm.generation.job"].browse(job_ids), prompts, strict=True):
            [reply] = replies(env, job)
            assert reply.body == reply_text(prompt, TOKENS) and reply.state == "done"
            assert job.output_message_id == reply
            assert reply.completion_tokens == TOKENS
            [attempt] = job.attempt_ids
            assert attempt.outcome == "completed" and attempt.worker == "provider batch"
        batch = env["llm.generation.job"].browse(job_ids[0]).batch_id
        assert batch.state == "ended" and batch.ended_at and batch.last_polled_at
        assert batch.provider_status == ("completed" if protocol == "openai" else "ended")
    stats = server.stats()
    assert stats["batches"] == 1 and stats["batch_requests"] == 20
    assert stats["requests"] == 0  # nothing was streamed


def test_a_partial_batch_waits_for_its_oldest_job(registry, setup):
    server, _, job_ids, _ = setup(3, batch_max_size=10, batch_max_wait_seconds=0.5)
    status_round(registry)
    assert server.batches() == []  # 3 of 10, and the oldest has not waited long enough
    time.sleep(0.6)
    assert set(until_finished(registry, job_ids).values()) == {"completed"}
    assert [b["total"] for b in server.batches()] == [3]


def test_errored_requests_fail_with_their_own_errors(registry, setup):
    prompts = ["fine", "[sim:status=400 message=bad-prompt] not fine", "[sim:status=503] later"]
    _, _, job_ids, _ = setup(3, prompts=prompts)
    states = until_finished(registry, job_ids)
    with registry.environment(readonly=True) as env:
        fine, refused, later = env["llm.generation.job"].browse(job_ids)
        assert states[fine.id] == "completed" and len(replies(env, fine)) == 1
        assert refused.state == "failed" and refused.error_kind == "permanent"
        assert "bad-prompt" in refused.error_message and not refused.next_retry_at
        assert later.state == "failed" and later.error_kind == "retryable"
        assert later.next_retry_at and "Retrying at" in later.error_message
        assert not replies(env, refused) and not replies(env, later)


def test_an_expired_batch_completes_what_finished_and_fails_the_rest(registry, setup):
    _, _, job_ids, _ = setup(
        6, server_settings={"batch_request_seconds": 0.1, "batch_window_seconds": 0.25}
    )
    states = until_finished(registry, job_ids)
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        done = jobs.filtered(lambda job: job.state == "completed")
        unrun = jobs - done
        assert 1 <= len(done) <= 2 and len(unrun) >= 4, states
        for job in unrun:
            assert job.error_kind == "retryable" and "expired before this request ran" in (
                job.error_message
            )
        assert all(len(replies(env, job)) == 1 for job in done)


def test_an_expired_batch_requeues_the_rest_as_streamed_jobs(registry, setup):
    _, provider_id, job_ids, _ = setup(
        6,
        server_settings={"batch_request_seconds": 0.1, "batch_window_seconds": 0.25},
        batch_requeue_unfinished=True,
    )
    deadline = time.monotonic() + 20
    while True:
        status_round(registry)
        with registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"].browse(job_ids)
            if not jobs.filtered(lambda job: job.state == "running"):
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        requeued = jobs.filtered(lambda job: job.state == "queued")
        assert len(requeued) >= 4
        for job in requeued:
            assert job.execution_mode == "stream" and not job.batch_id and job.retry_count == 0
            assert "Queued again, to be streamed" in job.attempt_ids[-1].error_message
    with registry.environment() as env:  # workers claim them now, in their old order
        leases = JobStore(env).claim(provider_id, "test-worker", limit=10)
    assert [lease.job_id for lease in leases] == requeued.ids


def test_cancelling_a_job_of_a_running_batch(registry, setup, users, protocol):
    server, _, job_ids, _ = setup(5, server_settings={"batch_request_seconds": 0.3})
    status_round(registry)
    with registry.environment(user=users["alice"]) as env:
        first = env["llm.generation.job"].browse(job_ids[0])
        assert first.state == "running" and first.can_cancel
        first.action_cancel()
    with registry.environment(readonly=True) as env:
        first = env["llm.generation.job"].browse(job_ids[0])
        assert first.state == "cancelled"
        assert "in provider batch" in first.error_message
    states = until_finished(registry, job_ids)
    assert states[job_ids[0]] == "cancelled"
    assert [states[job_id] for job_id in job_ids[1:]] == ["completed"] * 4
    with registry.environment(readonly=True) as env:
        assert not replies(env, env["llm.generation.job"].browse(job_ids[0]))
    assert server.batches()[0]["status"] == "done"  # the others still needed it


def test_a_batch_no_job_needs_is_cancelled_at_the_provider(registry, setup, users, protocol):
    server, _, job_ids, _ = setup(4, server_settings={"batch_request_seconds": 0.5})
    status_round(registry)
    with registry.environment(user=users["alice"]) as env:
        for job in env["llm.generation.job"].browse(job_ids):
            job.action_cancel()
    deadline = time.monotonic() + 20
    while True:
        status_round(registry)
        with registry.environment(readonly=True) as env:
            batch = env["llm.generation.job"].browse(job_ids[0]).batch_id
            state, status, cancel_sent = batch.state, batch.provider_status, batch.cancel_sent_at
        if state == "ended":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert cancel_sent
    assert server.batches()[0]["status"] == "cancelled"
    assert server.batches()[0]["done"] < 4
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"cancelled"}
        assert not any(replies(env, job) for job in jobs)


def test_overlapping_status_checks_apply_the_results_once(registry, setup, users, monkeypatch):
    server, _, job_ids, prompts = setup(10)
    status_round(registry)
    deadline = time.monotonic() + 10
    while server.batches()[0]["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    monkeypatch.setattr(batches, "STATUS_CHECK_SECONDS", 0.0)  # every check polls
    start, outcomes, errors = threading.Barrier(6), [], []

    def check(index: int) -> None:
        try:
            with registry.environment(user=users["alice"]) as env:
                job = env["llm.generation.job"].browse(job_ids[index])
                start.wait(timeout=10)
                outcomes.append(job.check_status(wait=0))
        except Exception as error:  # reported below
            errors.append(error)

    checkers = [threading.Thread(target=check, args=(index % 3,)) for index in range(6)]
    for checker in checkers:
        checker.start()
    for checker in checkers:
        checker.join(timeout=60)
    assert not errors and len(outcomes) == 6
    with registry.environment(readonly=True) as env:
        for job, prompt in zip(env["llm.generation.job"].browse(job_ids), prompts, strict=True):
            assert job.state == "completed"
            [reply] = replies(env, job)
            assert reply.body == reply_text(prompt, TOKENS)
            assert len(job.attempt_ids) == 1
    assert server.stats()["batch_requests"] == 10


def test_a_submitter_that_died_before_recording_the_batch(registry, setup, protocol):
    """The batch was opened (its jobs running in it) and perhaps sent, but the submitter died
    before it recorded the provider's answer: once its claim expires, an OpenAI batch is found
    by its key and adopted (not paid twice); an Anthropic batch cannot be found (it has no
    metadata), so its jobs are queued again."""
    from addons.llm_thread.wire import BATCH_PROTOCOLS

    server, provider_id, job_ids, prompts = setup(3)
    with registry.environment() as env:
        provider = env["llm.provider"].browse(provider_id)
        module, settings = batches._connection(provider)
        opening = JobStore(env).open_batch(
            provider_id,
            max_requests=module.MAX_REQUESTS,
            max_bytes=module.MAX_BYTES,
            request_line=batches._request_line(module, None),
        )
    assert opening is not None and len(opening.lines) == 3
    if protocol == "openai":  # it reached the provider, then the submitter died
        client = batches.shared_client(None)
        BATCH_PROTOCOLS[protocol].submit(
            client, lines=opening.lines, metadata={batches.METADATA_KEY: opening.key}, **settings
        )
    status_round(registry)
    with registry.environment(readonly=True) as env:
        assert env["llm.generation.batch"].browse(opening.batch_id).state == "submitting"
    with registry.environment() as env:  # its claim expires
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        env["llm.generation.batch"].browse(opening.batch_id).write({"submit_expires_at": past})

    assert set(until_finished(registry, job_ids).values()) == {"completed"}
    with registry.environment(readonly=True) as env:
        first = env["llm.generation.batch"].browse(opening.batch_id)
        jobs = env["llm.generation.job"].browse(job_ids)
        for job, prompt in zip(jobs, prompts, strict=True):
            [reply] = replies(env, job)
            assert reply.body == reply_text(prompt, TOKENS)
        if protocol == "openai":
            assert first.state == "ended" and len(server.batches()) == 1
            assert set(jobs.mapped("batch_id").ids) == {first.id}
        else:
            assert first.state == "failed" and "queued again" in first.error_message
            assert len(server.batches()) == 1  # submitted once, by the next round
            assert jobs.mapped("batch_id") != first
            assert {len(job.attempt_ids) for job in jobs} == {2}
            assert {job.attempt_ids[0].outcome for job in jobs} == {"interrupted"}


def test_a_provider_that_refuses_the_batch_fails_its_jobs(registry, setup, protocol):
    server, provider_id, job_ids, _ = setup(2)
    with registry.environment() as env:
        env["llm.provider"].browse(provider_id).write({"api_key": "sk-wrong-key-0000"})
    states = until_finished(registry, job_ids)
    assert set(states.values()) == {"failed"}
    with registry.environment(readonly=True) as env:
        for job in env["llm.generation.job"].browse(job_ids):
            assert job.error_kind == "permanent"
            assert "did not accept the batch" in job.error_message
            assert "sk-wrong" not in job.error_message
            assert job.batch_id.state == "failed"
    assert server.batches() == []


def test_the_execution_mode_is_checked(registry, users, make_simulator):
    from core import ValidationError

    server = make_simulator("ollama")
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "local", "service": "ollama", "api_base": server.url}
        )
        thread = env["llm.thread"].create(
            {"name": "T", "user_id": users["alice"], "provider_id": provider.id}
        )
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        with pytest.raises(ValidationError, match="no batch API"):
            queue.write({"batch_unattended": True})
        with pytest.raises(ValidationError, match="cannot run background responses"):
            queue.write({"execution_mode": "background"})
        thread_id = thread.id
    with registry.environment(user=users["alice"]) as env:
        with pytest.raises(ValidationError, match="execution_mode.*no batch API.*use 'stream'"):
            env["llm.generation.job"].create({"thread_id": thread_id, "execution_mode": "batch"})
        job = env["llm.generation.job"].create({"thread_id": thread_id, "interactive": False})
        assert job.execution_mode == "stream"  # the queue does not batch


@pytest.mark.slow
def test_a_batch_generation_as_a_user_meets_it(
    registry, setup, users, api, start_workers, tmp_path, db_url
):
    """Alice asks over HTTP for a reply generated in a provider batch; a worker process
    (its status cron every 2 s) submits and polls it; she follows the job's events to the end,
    reads where it is at the provider in the API, and an operator reads it in the CLI."""
    from addons.llm_thread.tests.command_line import Llmjobs

    from .test_http_api import events

    server, provider_id, _, _ = setup(1, batch_max_size=1, batch_max_wait_seconds=0)
    with registry.environment() as env:
        thread = env["llm.thread"].create(
            {"name": "Batched", "user_id": users["alice"], "provider_id": provider_id}
        )
        thread_id = thread.id
    crons = tmp_path / "status-cron.yaml"
    crons.write_text(
        "- name: check_generation_job_statuses\n  model: llm.generation.queue\n"
        "  method: _check_job_statuses\n  interval: 2 seconds\n"
    )
    start_workers(1, LLMJOBS_CRON_FILE=str(crons))
    alice = api.client("alice")
    found = events(
        alice,
        "POST",
        f"/api/threads/{thread_id}/generate",
        json={"content": "What does a batch cost?", "execution_mode": "batch"},
        timeout=120,
    )
    kinds = [event.event for event in found]
    assert kinds[0] == "generation_mode" and "execution_mode 'batch'" in found[0].data
    assert kinds[-1] == "done", kinds
    assert reply_text("What does a batch cost?", TOKENS) in found[-1].data
    job_id = next(json.loads(e.data)["job_id"] for e in found if e.event == "job_status")

    detail = alice.get(f"/api/jobs/{job_id}").json()
    assert detail["state"] == "completed" and detail["execution_mode"] == "batch"
    at = detail["provider_job"]
    assert at["kind"] == "batch" and at["state"] == "ended" and at["id"]
    assert at["provider_status"] in ("completed", "ended") and at["last_polled_at"]
    assert sum(at["request_counts"].values()) >= 1
    assert [a["worker"] for a in detail["attempts"]] == ["provider batch"]
    assert KEY not in json.dumps(detail)

    shown = Llmjobs(db_url, tmp_path).run("jobs", "show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    assert f"batch {at['id']}" in shown.stdout and "last polled" in shown.stdout
    runs_as = next(line for line in shown.stdout.splitlines() if line.startswith("Runs as"))
    assert runs_as.split()[-1] == "batch" and KEY not in shown.stdout
    assert server.stats()["batches"] >= 1


def test_diagnostics_name_a_batch_whose_polls_fail_or_stopped(registry, setup, users):
    from addons.llm_generation_job import monitoring

    server, _, job_ids, _ = setup(2, server_settings={"batch_request_seconds": 5})
    status_round(registry)
    server.stop()  # the provider is unreachable from now on
    status_round(registry)
    with registry.environment(user=users["alice"]) as env:
        found = monitoring.diagnose(env)
        failing = [item for item in found["stuck"] if item["kind"] == "batch_poll_failing"]
        assert sorted(item["id"] for item in failing) == sorted(job_ids)
        assert "the last poll failed: Provider 'batcher' failed" in failing[0]["reason"]
        assert any("2 jobs in provider batch" in problem for problem in found["problems"])
    with registry.environment() as env:  # nobody polls it for ten minutes
        batch = env["llm.generation.job"].browse(job_ids[0]).batch_id
        ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        batch.write({"error_message": False, "last_polled_at": ago})
    with registry.environment(user=users["alice"]) as env:
        kinds = {item["kind"] for item in monitoring.diagnose(env)["stuck"]}
        assert "batch_unpolled" in kinds
    with registry.environment(user=users["bob"]) as env:  # not his jobs
        assert not monitoring.diagnose(env)["stuck"]


def test_a_batch_that_never_ends_fails_its_jobs_to_be_retried(registry, setup):
    server, _, job_ids, _ = setup(2, server_settings={"batch_request_seconds": 60})
    status_round(registry)
    server.stop()
    with registry.environment() as env:  # submitted 26 hours ago, polls failing since
        batch = env["llm.generation.job"].browse(job_ids[0]).batch_id
        batch.write({"submitted_at": dt.datetime.now(dt.UTC) - dt.timedelta(hours=26)})
    status_round(registry)
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"failed"}
        assert set(jobs.mapped("error_kind")) == {"retryable"}
        assert all(job.next_retry_at for job in jobs)
        assert "gave no result 25 hours after its submission" in jobs[0].error_message
        assert jobs.mapped("batch_id").state == "failed"


def test_managers_configure_batches_over_http_and_the_cli(registry, api, users, tmp_path, db_url):
    from addons.llm_thread.tests.command_line import Llmjobs

    with registry.environment() as env:
        queues = env["llm.generation.queue"]
        openai = env["llm.provider"].create(
            {"name": "oa", "service": "openai", "api_base": "http://127.0.0.1:9/v1"}
        )
        local = env["llm.provider"].create(
            {"name": "local", "service": "ollama", "api_base": "http://127.0.0.1:9"}
        )
        openai_queue = queues._get_or_create_queue(openai.id).id
        local_queue = queues._get_or_create_queue(local.id).id
    maya, alice = api.client("manager"), api.client("alice")
    patch = {"batch_unattended": True, "batch_max_size": 500, "batch_max_wait_seconds": 120}
    assert alice.patch(f"/api/queues/{openai_queue}", json=patch).status_code == 403
    changed = maya.patch(f"/api/queues/{openai_queue}", json=patch)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["batch_unattended"] and body["batch_max_size"] == 500
    assert body["execution_mode"] == "stream" and body["running_batches"] == 0
    refused = maya.patch(f"/api/queues/{local_queue}", json={"batch_unattended": True})
    assert refused.status_code == 422 and "no batch API" in refused.text
    too_big = maya.patch(f"/api/queues/{openai_queue}", json={"batch_max_size": 60_000})
    assert too_big.status_code == 422 and "1 to 50000 requests" in too_big.text

    cli = Llmjobs(db_url, tmp_path)
    done = cli.run("queues", "set", "oa", "--execution-mode", "background", "--batch-max-wait", "5")
    assert done.returncode == 0, done.stderr
    assert "background; unattended in batches (up to 500, 5 s)" in done.stdout
    failed = cli.run("queues", "set", "local", "--execution-mode", "background")
    assert failed.returncode != 0 and "cannot run background responses" in failed.stderr
    with registry.environment(readonly=True) as env:
        queue = env["llm.generation.queue"].browse(openai_queue)
        assert (queue.execution_mode, queue.batch_max_wait_seconds) == ("background", 5)
        assert env["llm.generation.queue"].browse(local_queue).execution_mode == "stream"


def test_the_cleanup_deletes_old_batches_once_their_jobs_are_gone(registry, setup, users):
    prompts = ["fine", "[sim:status=503] later"]  # one completes, one waits for its retry
    _, _, job_ids, _ = setup(2, prompts=prompts)
    until_finished(registry, job_ids)
    with registry.environment(readonly=True) as env:
        batch_id = env["llm.generation.job"].browse(job_ids[0]).batch_id.id
    with registry.environment() as env:  # everything finished is old enough
        assert env["llm.generation.job"].cleanup_old_jobs(days=-1) == 1
    with registry.environment(readonly=True) as env:
        assert env["llm.generation.batch"].browse(batch_id).exists()  # a job of it is left
    with registry.environment(user=users["alice"]) as env:
        env["llm.generation.job"].browse(job_ids[1]).action_cancel()
    with registry.environment() as env:
        assert env["llm.generation.job"].cleanup_old_jobs(days=-1) == 1
    with registry.environment(readonly=True) as env:
        assert not env["llm.generation.batch"].browse(batch_id).exists()
