"""The overview, the diagnosis and fix_stuck (monitoring.py) on crafted jobs, driven through the
job store to the states each test needs, on SQLite and PostgreSQL; and their HTTP endpoints."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from addons.llm_generation_job import monitoring
from addons.llm_generation_job.store import JobStore, Piece
from core import AccessError

from .conftest import make_provider

JOB, ATTEMPT, WORKER = "llm.generation.job", "llm.generation.job.attempt", "llm.generation.worker"


def ago(**delta) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(**delta)


class Jobs:
    """Jobs of one provider, queued by a thread's owner and driven through the job store."""

    def __init__(self, env, users, name="sim"):
        self.env, self.store = env, JobStore(env)
        self.provider, model = make_provider(env, name=name)
        self.queue = env["llm.generation.queue"]._get_or_create_queue(self.provider.id)
        self.threads = {
            login: env["llm.thread"]
            .with_user(users[login])
            .create(
                {"name": f"{login}'s chat", "provider_id": self.provider.id, "model_id": model.id}
            )
            for login in ("alice", "bob")
        }
        self.users = users

    def queued(self, owner="alice", **values):
        """``values``: what a manager sets (``max_retries``)."""
        job = (
            self.env[JOB].with_user(self.users[owner]).create({"thread_id": self.threads[owner].id})
        )
        job.sudo().write(values)
        job.action_queue()
        return job.sudo()

    def running(self, owner="alice", worker="w:1", **values):
        job = self.queued(owner, **values)
        [lease] = self.store.claim(self.provider.id, worker, job_ids=[job.id])
        return job, lease, self.store.start_reply(lease)

    def completed(self, owner="alice", tokens=10, reason="stop", ttft=0.2, seconds=1.0):
        """A completed job whose attempt took ``ttft`` to its first token, then ``seconds``."""
        job, lease, start = self.running(owner)
        self.store.append([Piece(lease, start.seq + 1, start.attempt, "hi", first=True)])
        values = {"body": "hi", "state": "done", "prompt_tokens": 5}
        values.update(completion_tokens=tokens, finish_reason=reason)
        assert self.store.complete(lease, values)
        attempt = self.env[ATTEMPT].browse(lease.attempt_id)
        ended = attempt.ended_at
        first = ended - dt.timedelta(seconds=seconds)
        attempt.write({"first_token_at": first, "started_at": first - dt.timedelta(seconds=ttft)})
        return job

    def failed(self, error="HTTP 400 from the provider: bad request", retryable=False, **kw):
        job, lease, _start = self.running(**kw)
        assert self.store.fail(lease, error, retryable=retryable)
        return job

    def cancelled(self):
        job = self.queued()
        job.action_cancel()
        return job


@pytest.fixture
def jobs(env, users):
    return Jobs(env, users)


@pytest.fixture
def live_worker(env):
    """This process as a live worker of every queue (for a minute or so)."""
    return env[WORKER].register(4, [], beat_seconds=60)


def dead_worker(env, name="ghost:1"):
    """A worker row whose beats stopped a while ago (the process was killed)."""
    beat = ago(seconds=30)
    return env[WORKER].create(
        {
            "name": name,
            "host": name.split(":")[0],
            "pid": int(name.split(":")[1]),
            "started_at": ago(minutes=5),
            "last_beat_at": beat,
            "alive_until": beat + dt.timedelta(seconds=6),
            "slots": 4,
        }
    )


def as_user(env, users, login):
    return env(user=users[login])


# -- overview --------------------------------------------------------------------------------
def test_the_overview_counts_states_now_and_finished_jobs_of_the_last_day(jobs, env, live_worker):
    for _ in range(3):
        jobs.completed()
    jobs.failed()
    jobs.failed(error="HTTP 503: overloaded", retryable=True)  # waits for its retry
    jobs.cancelled()
    jobs.queued(), jobs.queued()
    jobs.running()
    found = monitoring.overview(env)
    assert found["state_counts"] == {
        "queued": 2,
        "running": 1,
        "retry_waiting": 1,
        "completed": 3,
        "failed": 1,
        "cancelled": 1,
    }
    [card] = found["queues"]
    assert (card["name"], card["provider_name"], card["enabled"]) == ("sim queue", "sim", True)
    assert (card["backlog"], card["running"], card["limit"], card["saturation"]) == (2, 1, 5, 0.2)
    assert card["health"] == "healthy" and card["live_workers"] == 1
    assert card["oldest_queued_age_seconds"] >= 0
    for window, buckets, step in (("hour", 12, 300), ("day", 24, 3600)):
        series = card[window]["series"]
        assert len(series) == buckets
        assert all(
            (later["start"] - earlier["start"]).total_seconds() == step
            for earlier, later in itertools.pairwise(series)
        )
        assert series[-1]["start"] <= found["generated_at"]
        assert (card[window]["completed"], card[window]["failed"]) == (3, 2)
        assert card[window]["success_rate"] == pytest.approx(60.0)
        assert sum(bucket["completed"] for bucket in series) == 3
    [worker] = found["workers"]
    assert worker["id"] == live_worker.id and worker["beat_age_seconds"] >= 0


def test_the_series_move_with_time(jobs, env):
    jobs.completed(), jobs.failed()
    later = monitoring.overview(env, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    [card] = later["queues"]
    assert (card["hour"]["completed"], card["hour"]["failed"]) == (0, 0)
    assert card["hour"]["success_rate"] is None
    assert (card["day"]["completed"], card["day"]["failed"]) == (1, 1)
    # Two hours ago: the third or second bucket from the end, whatever the minute now.
    assert [b["completed"] for b in card["day"]["series"][-4:-1]].count(1) == 1
    next_day = monitoring.overview(env, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=25))
    assert next_day["queues"][0]["day"]["completed"] == 0
    assert next_day["state_counts"]["completed"] == next_day["state_counts"]["failed"] == 0


def test_the_llm_figures_of_the_last_hour(jobs, env):
    jobs.completed(tokens=11, reason="stop", ttft=0.1, seconds=1.0)  # 10 tokens/s after the first
    jobs.completed(tokens=21, reason="stop", ttft=0.3, seconds=1.0)  # 20
    jobs.completed(tokens=31, reason="length", ttft=0.5, seconds=2.0)  # 15
    llm = monitoring.overview(env)["llm"]
    assert (llm["completion_tokens_hour"], llm["prompt_tokens_hour"]) == (63, 15)
    assert llm["finish_reasons"] == {"stop": 2, "length": 1}
    assert llm["ttft_p50_ms"] == pytest.approx(300.0, abs=1)
    assert llm["ttft_p95_ms"] == pytest.approx(500.0, abs=1)
    assert llm["tokens_per_second_p50"] == pytest.approx(15.0, rel=0.01)
    assert (llm["sample_size"], llm["sampled"]) == (3, False)
    [card] = monitoring.overview(env)["queues"]
    assert card["ttft_p50_ms"] == pytest.approx(300.0, abs=1)
    assert card["tokens_per_second"] == pytest.approx(15.0, rel=0.01)


def test_a_queue_failing_most_of_its_jobs_is_critical(jobs, env):
    jobs.completed()
    for _ in range(4):
        jobs.failed()
    [card] = monitoring.overview(env)["queues"]
    assert card["health"] == "critical"
    problems = monitoring.diagnose(env)["problems"]
    assert any("Queue 'sim queue' is failing: 4 of the 5 jobs" in p for p in problems)
    jobs.queue.action_disable()
    assert monitoring.overview(env)["queues"][0]["health"] == "disabled"


def test_failures_group_by_normalized_error_and_examples_are_the_callers(jobs, env, users):
    alices = [
        jobs.failed(error=f"HTTP 429: rate limited (request req_{n}f3a9c2b1d77e) at 10:4{n}:07")
        for n in range(3)
    ]
    bobs = jobs.failed(owner="bob", error="HTTP 429: rate limited (request req_9f3a9c2b1d77e)")
    jobs.failed(owner="bob", error="HTTP 401: invalid key")
    retried = jobs.failed(error="HTTP 503: overloaded", retryable=True)
    groups = monitoring.overview(env)["failure_groups"]
    assert [(g["error"], g["count"]) for g in groups] == [
        ("HTTP 429: rate limited (request req_<id>) at <time>", 3),
        ("HTTP 401: invalid key", 1),
        ("HTTP 429: rate limited (request req_<id>)", 1),
        ("HTTP 503: overloaded.", 1),  # its "Retrying at ..." is what happens next, not why
    ]
    assert groups[0]["example_job_id"] == alices[-1].id and groups[0]["provider_name"] == "sim"
    assert groups[0]["last_at"] <= dt.datetime.now(dt.UTC)
    as_bob = {
        g["error"]: g for g in monitoring.overview(as_user(env, users, "bob"))["failure_groups"]
    }
    assert as_bob["HTTP 429: rate limited (request req_<id>) at <time>"]["count"] == 3
    assert as_bob["HTTP 429: rate limited (request req_<id>) at <time>"]["example_job_id"] is None
    assert as_bob["HTTP 429: rate limited (request req_<id>)"]["example_job_id"] == bobs.id
    assert as_bob["HTTP 503: overloaded."]["example_job_id"] is None
    assert retried.state == "failed"


def test_long_running_jobs_by_the_default_and_by_half_the_queue_deadline(jobs, env, users):
    quick, _lease, _start = jobs.running()
    slow, _lease, _start = jobs.running(owner="bob")
    slow.write_where([], {"started_at": ago(seconds=400)})
    found = monitoring.overview(env)["long_running"]
    assert [j["id"] for j in found] == [slow.id]
    assert found[0]["running_seconds"] >= 400 and found[0]["worker"] == "w:1"
    assert found[0]["provider_name"] == "sim" and found[0]["state"] == "running"
    quick.write_where([], {"started_at": ago(seconds=60)})
    jobs.queue.attempt_deadline_seconds = 100  # half of it: 50 s
    assert [j["id"] for j in monitoring.overview(env)["long_running"]] == [slow.id, quick.id]
    as_alice = monitoring.overview(as_user(env, users, "alice"))
    assert [j["id"] for j in as_alice["long_running"]] == [quick.id]


def test_stalled_jobs_say_why_and_ordinary_users_see_their_own(jobs, env, users, live_worker):
    expired, _lease, _start = jobs.running(worker="frozen:7")
    expired.write_where([], {"lease_expires_at": ago(seconds=5)})
    dead_worker(env, "ghost:1")
    orphan, _lease, _start = jobs.running(owner="bob", worker="ghost:1")
    healthy, _lease, _start = jobs.running(worker=live_worker.name)
    unknown, _lease, _start = jobs.running(worker="script:99")  # no worker row: not presumed dead
    stalled = {j["id"]: j for j in monitoring.overview(env)["stalled"]}
    assert set(stalled) == {expired.id, orphan.id}
    assert "its lease expired at" in stalled[expired.id]["reason"]
    assert "frozen:7 died or froze" in stalled[expired.id]["reason"]
    assert "worker ghost:1, which is no longer live (last beat at" in stalled[orphan.id]["reason"]
    assert stalled[orphan.id]["worker"] == "ghost:1"
    as_alice = monitoring.overview(as_user(env, users, "alice"))
    assert [j["id"] for j in as_alice["stalled"]] == [expired.id]
    assert healthy.state == unknown.state == "running"


# -- diagnosis -------------------------------------------------------------------------------
def test_a_healthy_system_has_no_problems(jobs, env, live_worker):
    jobs.completed()
    jobs.running(worker=live_worker.name)
    found = monitoring.diagnose(env)
    assert found["problems"] == [] and found["stuck"] == []
    assert found["workers_alive"] == 1
    [queue] = found["queues"]
    assert (queue["name"], queue["health"], queue["backlog"], queue["running"]) == (
        "sim queue",
        "healthy",
        0,
        1,
    )
    assert found["failure_rates"] == [
        {"provider_name": "sim", "model_name": "sim-model", "finished": 1, "failed": 0, "rate": 0.0}
    ]


def test_every_kind_of_stuck_job_has_its_reason_and_fix(jobs, env, users):
    expired, _lease, _start = jobs.running(worker="frozen:7")
    expired.write_where([], {"lease_expires_at": ago(seconds=5)})
    dead_worker(env, "ghost:1")
    orphan, _lease, _start = jobs.running(worker="ghost:1", max_retries=0)
    overdue = jobs.failed(error="HTTP 503: overloaded", retryable=True)
    overdue.write_where([], {"next_retry_at": ago(minutes=10)})
    external, lease, _start = jobs.running()
    assert jobs.store.submit_external(lease, "batch_abc")
    external.write_where([], {"started_at": ago(hours=2)})  # past the deadline of one hour
    waiting = jobs.queued()
    paused = Jobs(env, users, name="paused")
    paused.queue.action_disable()
    held = paused.queued()

    found = monitoring.diagnose(env)
    stuck = {job["id"]: job for job in found["stuck"]}
    kinds = {job_id: (job["kind"], job["fix"]) for job_id, job in stuck.items()}
    assert kinds == {
        expired.id: ("lease_expired", "requeue"),
        orphan.id: ("worker_gone", "fail"),  # no retries left
        overdue.id: ("retry_overdue", "retry"),
        external.id: ("external_unpolled", "fail"),
        waiting.id: ("no_worker", None),
        held.id: ("queue_paused", None),
    }
    assert "died or froze" in stuck[expired.id]["reason"]
    assert "ghost:1, which is no longer live" in stuck[orphan.id]["reason"]
    assert "automatic retry, due at" in stuck[overdue.id]["reason"]
    assert "10 min ago" in stuck[overdue.id]["reason"]
    assert "not polled ever" in stuck[external.id]["reason"]
    assert "past its queue's attempt deadline (3600 s)" in stuck[external.id]["reason"]
    assert "which no live worker serves: start one (`llmjobs worker`" in stuck[waiting.id]["reason"]
    resume = f"POST /api/queues/{paused.queue.id}/resume"
    assert "which is paused" in stuck[held.id]["reason"] and resume in stuck[held.id]["reason"]
    assert found["problems"] == [
        "No worker is live: queued jobs, automatic retries and the crons wait until one starts "
        "(`llmjobs worker`).",
        "2 jobs running without a live worker (theirs died or froze): `llmjobs diagnostics "
        "--fix-stuck` requeues them.",
        "1 job waiting in 'sim queue', which no live worker serves.",
        "1 job waiting in 'paused queue', which is paused.",
        "1 job waiting for an automatic retry that is overdue (no worker requeues due retries).",
        "1 job running at their provider, not polled ever (the status cron is not running).",
    ]
    as_bob = monitoring.diagnose(as_user(env, users, "bob"))
    assert as_bob["stuck"] == []  # every stuck job is Alice's


def test_the_failure_rates_are_per_provider_and_model(jobs, env, users):
    other = Jobs(env, users, name="other")
    jobs.completed(), jobs.failed()
    other.completed()
    rates = monitoring.diagnose(env)["failure_rates"]
    assert [(r["provider_name"], r["finished"], r["failed"], r["rate"]) for r in rates] == [
        ("sim", 2, 1, 50.0),
        ("other", 1, 0, 0.0),
    ]
    window = monitoring.diagnose(env, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    assert (
        window["failure_rates"]
        and not monitoring.diagnose(
            env, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2), errors_since_hours=1
        )["failure_rates"]
    )


# -- fixing ----------------------------------------------------------------------------------
def test_fix_stuck_takes_back_what_dead_workers_left_through_the_store(jobs, env, users):
    dead_worker(env, "ghost:1")
    first, ghost_lease, _start = jobs.running(worker="ghost:1")
    doomed, _lease, _start = jobs.running(worker="ghost:1", max_retries=0)
    expired, _lease, _start = jobs.running(worker="frozen:7")
    expired.write_where([], {"lease_expires_at": ago(seconds=5)})
    overdue = jobs.failed(error="HTTP 503: overloaded", retryable=True)
    overdue.write_where([], {"next_retry_at": ago(minutes=10)})
    live_worker = env[WORKER].register(4, [], beat_seconds=60)
    kept, _lease, _start = jobs.running(worker=live_worker.name)
    queued_at = first.queued_at

    with pytest.raises(AccessError, match="Only LLM managers"):
        monitoring.fix_stuck(as_user(env, users, "alice"))
    done = monitoring.fix_stuck(env)
    assert done == [
        f"Requeued job {first.id} (its worker ghost:1 is not live).",
        f"Failed job {doomed.id} (its worker ghost:1 is not live; it had no retries left).",
        f"Requeued job {expired.id} (its lease expired: its worker frozen:7 died or froze).",
        f"Requeued job {overdue.id} for its automatic retry, which was due.",
    ]
    assert (first.state, first.retry_count, first.queued_at) == ("queued", 1, queued_at)
    assert first.attempt_ids.mapped("outcome") == ["lost"]
    assert "ghost:1 stopped beating" in first.attempt_ids.error_message
    assert doomed.state == "failed" and "Gave up after 1 attempt." in doomed.error_message
    assert (expired.state, overdue.state, kept.state) == ("queued", "queued", "running")
    # The dead worker's lease is fenced out: were it alive after all, it could write nothing.
    assert not jobs.store.complete(ghost_lease, {"body": "late", "state": "done"})
    assert not first.output_message_id.body
    assert monitoring.fix_stuck(env) == []


def test_fix_stuck_fails_a_provider_side_job_past_its_deadline(jobs, env):
    external, lease, _start = jobs.running()
    assert jobs.store.submit_external(lease, "batch_abc")
    external.write_where([], {"started_at": ago(hours=2)})
    [sentence] = monitoring.fix_stuck(env)
    assert sentence.startswith(f"Failed job {external.id}: No result from the provider after")
    assert external.state == "failed" and external.error_kind == "retryable"


def test_errors_normalize_to_their_cause():
    normalize = monitoring.normalize_error
    assert normalize("HTTP 500: boom. Gave up after 4 attempts.") == "HTTP 500: boom."
    assert normalize("Timed out after 30.5 s (id 6f1c2a9e-0c1d-4e7b-9a3f-2b8c7d6e5f4a)") == (
        "Timed out after <n> s (id <id>)"
    )
    assert normalize("status 429 on 2026-12-02T10:42:07Z, job 1234") == (
        "status 429 on <time>, job <n>"
    )
    assert normalize(None) == "(no message)"
    assert len(normalize("x" * 1000)) == monitoring.ERROR_LENGTH


# -- HTTP ------------------------------------------------------------------------------------
@pytest.fixture
def crafted(registry, users):
    """Committed: a completed job of Alice's, a stalled one of Bob's (its worker dead)."""
    with registry.environment() as env:
        jobs = Jobs(env, users)
        done = jobs.completed()
        dead_worker(env, "ghost:1")
        stalled, _lease, _start = jobs.running(owner="bob", worker="ghost:1")
        return {"done": done.id, "stalled": stalled.id}


def test_the_overview_over_http_shows_users_their_own_jobs(api, crafted):
    alice, bob, manager = (api.client(name) for name in ("alice", "bob", "manager"))
    seen = manager.get("/api/overview")
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["state_counts"]["completed"] == 1 and body["state_counts"]["running"] == 1
    assert [job["id"] for job in body["stalled"]] == [crafted["stalled"]]
    assert len(body["queues"][0]["hour"]["series"]) == 12
    assert body["llm"]["finish_reasons"] == {"stop": 1}
    assert alice.get("/api/overview").json()["stalled"] == []
    assert alice.get("/api/overview").json()["state_counts"]["running"] == 1  # counts: everyone's
    assert [j["id"] for j in bob.get("/api/overview").json()["stalled"]] == [crafted["stalled"]]
    assert api.client(None).get("/api/overview").status_code == 401


def test_diagnostics_and_fix_stuck_over_http_are_for_managers(api, crafted, registry):
    alice, manager = api.client("alice"), api.client("manager")
    assert alice.get("/api/diagnostics").status_code == 403
    assert alice.post("/api/diagnostics/fix-stuck").status_code == 403
    found = manager.get("/api/diagnostics").json()
    [stuck] = found["stuck"]
    assert (stuck["id"], stuck["kind"], stuck["fix"]) == (
        crafted["stalled"],
        "worker_gone",
        "requeue",
    )
    assert found["problems"]
    fixed = manager.post("/api/diagnostics/fix-stuck")
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["done"] == [
        f"Requeued job {crafted['stalled']} (its worker ghost:1 is not live)."
    ]
    assert all(job["kind"] != "worker_gone" for job in fixed.json()["diagnosis"]["stuck"])
    with registry.environment(readonly=True) as env:
        assert env[JOB].browse(crafted["stalled"]).state == "queued"
