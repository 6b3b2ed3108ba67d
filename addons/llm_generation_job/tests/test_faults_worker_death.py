"""Fault injection, worker death under load, on SQLite and PostgreSQL: four ``llmjobs worker``
processes run 1,000 slowly streaming jobs (400 on SQLite) while a random one is SIGKILLed
every second and restarted; a frozen worker (SIGSTOP past its lease, then SIGCONT) cannot
write late.

What must hold at the end: every job completed exactly once, one assistant reply per job in
its thread, no job left running; a job is taken back within about a lease of its worker's
death, and restarts ahead of the jobs queued after it (it keeps its place in line)."""

from __future__ import annotations

import datetime as dt
import random
import signal
import time

import pytest

from addons.llm_generation_job.follow import wait_finished

from .conftest import streaming
from .test_worker_processes import assert_one_reply_per_job, setup_threads

# The test bounds itself (420 s of deaths, then 180 s to finish): above pytest's 300 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(660)]

LEASE = 4  # seconds (see test_worker_processes.LEASE_SECONDS for why not shorter)
MAINTENANCE = LEASE / 3  # how often a worker looks for expired leases
# Slots per worker: a restarted worker needs a few seconds to start (more on PostgreSQL, whose
# schema it reads first), and with a death every second most workers are starting: the few
# that run carry many streams each.
SLOTS = 24
# A lease is taken back by the maintenance of a running worker; when it expires, all of them
# may still be starting (seconds each, more on PostgreSQL under this load; a start may even be
# cut short by the next death), so recovery is within a lease, a maintenance interval and
# about two starts.
STARTUP = 4
SLOW = "[sim:tokens=20 token_delay=0.05]"  # about a second a reply
# Four jobs per thread: 1,000 jobs on PostgreSQL, the database of many workers; 400 on SQLite
# (one machine), which keeps the suite's time in CI's budget.
THREADS = {"postgresql": 250, "sqlite": 100}


def queue_slow_jobs(registry, thread_ids, per_thread):
    with registry.environment() as env:
        jobs = env["llm.generation.job"].create(
            [
                # Many deaths may hit one job: its retries must outlast them.
                {"thread_id": t, "generation_inputs": {"prompt": f"{SLOW} q{n}"}, "max_retries": 50}
                for n in range(per_thread)
                for t in thread_ids
            ]
        )
        for job in jobs:
            job.action_queue()
        return jobs.ids


def unfinished(registry, job_ids) -> int:
    with registry.environment(readonly=True) as env:
        return env["llm.generation.job"].search_count(
            [("id", "in", job_ids), ("state", "in", ["queued", "running"])]
        )


def test_a_worker_killed_every_second_loses_no_job_and_doubles_no_reply(
    registry, start_workers, openai_server
):
    threads = THREADS[registry.dialect]
    # The queue's limit is above the workers' slots: a dead worker's jobs hold their places in
    # it until they are taken back, and with a death every second they would otherwise fill it
    # (the limit holding is test_worker_processes' concern, not this test's).
    thread_ids = setup_threads(registry, openai_server.url, threads, max_concurrent=100)
    job_ids = queue_slow_jobs(registry, thread_ids, per_thread=4)
    alive = start_workers(4, concurrency=SLOTS, lease=LEASE)
    deaths: dict[int, dt.datetime] = {}  # pid -> when it was killed
    chance = random.Random(20261202)
    deadline = time.monotonic() + 420
    while unfinished(registry, job_ids) > len(job_ids) // 10:
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(1)
        victim = chance.choice(alive)
        victim.kill()
        victim.wait()
        deaths[victim.pid] = dt.datetime.now(dt.UTC)
        alive.remove(victim)
        alive += start_workers(1, concurrency=SLOTS, lease=LEASE)
    wait_finished(registry, job_ids, timeout=180)

    assert_one_reply_per_job(registry, job_ids)  # completed once, one reply each
    assert len(deaths) >= 10
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        attempts = env["llm.generation.job.attempt"].search([("job_id", "in", job_ids)])
        assert set(attempts.mapped("outcome")) <= {"completed", "lost"}
        assert len(attempts.filtered(lambda a: a.outcome == "completed")) == len(job_ids)
        lost = attempts.filtered(lambda a: a.outcome == "lost")
        assert len(lost) >= 10, "the deaths hit running attempts"
        for body in jobs.mapped("output_message_id.body"):
            assert body.count(" ") >= 19  # the whole reply, once
        first_starts = {
            job.id: (job.queued_at, job.id, min(job.attempt_ids.mapped("started_at")))
            for job in jobs
        }
        # One maintenance pass takes back every expired job in one transaction, and closes
        # their attempts with the same ended_at: the last write of a pass is the nearest to
        # its commit, when the jobs are back in line.
        pass_written: dict[dt.datetime, dt.datetime] = {}
        for attempt in lost:
            written = pass_written.get(attempt.ended_at, attempt.write_date)
            pass_written[attempt.ended_at] = max(written, attempt.write_date)
        for attempt in lost:
            pid = int(attempt.worker.rsplit(":", 1)[1])
            died = deaths[pid]
            job = attempt.job_id
            restart = min(a.started_at for a in job.attempt_ids if a.number == attempt.number + 1)
            # Taken back within about a lease of the death: it was requeued when its lost
            # attempt was written (write_date: ended_at is taken before the requeue waits for
            # its lock). When it starts again depends on a free slot (every second another
            # worker dies, and its jobs hold the queue's slots until they are taken back)...
            requeued = attempt.write_date
            taken_back = (requeued - died).total_seconds()
            assert taken_back < LEASE + MAINTENANCE + 2 * STARTUP + 2, (job.id, taken_back)
            # ...but it starts ahead of every job queued after it: none of those started for
            # the first time while it waited to start again (a claim already under way at the
            # requeue's commit may not have seen it yet, hence the margin).
            requeued = pass_written[attempt.ended_at] + dt.timedelta(seconds=0.5)
            place = (job.queued_at, job.id)
            overtaken = [
                other
                for other, (queued_at, other_id, started) in first_starts.items()
                if (queued_at, other_id) > place and requeued < started < restart
            ]
            assert not overtaken, (job.id, overtaken[:5])


def test_a_frozen_worker_cannot_write_after_its_lease_expired(
    registry, start_workers, openai_server
):
    thread_ids = setup_threads(registry, openai_server.url, 4, max_concurrent=8)
    slow = "[sim:tokens=60 token_delay=0.05]"
    with registry.environment() as env:
        jobs = env["llm.generation.job"].create(
            [{"thread_id": t, "generation_inputs": {"prompt": f"{slow} q"}} for t in thread_ids]
        )
        for job in jobs:
            job.action_queue()
        job_ids = jobs.ids
    frozen = start_workers(1, concurrency=8, lease=LEASE)[0]
    deadline = time.monotonic() + 30
    while True:
        with registry.environment(readonly=True) as env:
            if streaming(env, job_ids) == set(job_ids):
                break
        assert time.monotonic() < deadline, "the worker never streamed the jobs"
        time.sleep(0.05)
    frozen.send_signal(signal.SIGSTOP)
    try:
        start_workers(1, concurrency=8, lease=LEASE)  # takes the jobs over
        wait_finished(registry, job_ids, timeout=60)
        with registry.environment(readonly=True) as env:
            done = env["llm.generation.job"].browse(job_ids)
            assert set(done.mapped("state")) == {"completed"}
            finished_bodies = {j.id: j.output_message_id.body for j in done}
    finally:
        frozen.send_signal(signal.SIGCONT)
    time.sleep(LEASE)  # the thawed worker tries its late writes: pieces, completions
    assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        for job in env["llm.generation.job"].browse(job_ids):
            assert job.output_message_id.body == finished_bodies[job.id]  # nothing late
            assert job.attempt_ids.mapped("outcome") == ["lost", "completed"]
            log = env["llm.generation.job.chunk"].search([("job_id", "=", job.id)])
            frozen_pieces = log.filtered(lambda c: c.attempt == 1 and c.kind == "text")
            later = log.filtered(lambda c: c.attempt == 2)
            assert later and min(later.mapped("seq")) > max(frozen_pieces.mapped("seq") or [0])
    assert frozen.poll() is None  # alive, and it went on serving
    refused = frozen.log.read_text().count("is no longer this worker's")
    assert refused >= 1, "the thawed worker's log does not say its late writes were refused"
