"""``llmjobs diagnostics`` as an operator runs it, a process of its own on the test database
(SQLite and PostgreSQL): exit status 0 when healthy, 1 with trouble, ``--json`` for scripts;
and ``--fix-stuck`` on the jobs of a really killed worker process, which a fresh worker then
completes exactly once."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from addons.llm_generation_job.follow import wait_finished
from core.config import secret_key

from .conftest import streaming
from .test_monitoring import Jobs, dead_worker
from .test_worker_processes import assert_one_reply_per_job, setup_threads

JOB, WORKER = "llm.generation.job", "llm.generation.worker"
LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent))


def diagnostics(db_url: str, folder: Path, *options: str) -> subprocess.CompletedProcess:
    secret_key()  # the key file of the home folder exists, as for the workers
    return subprocess.run(
        [LLMJOBS, "diagnostics", *options],
        env={**os.environ, "LLMJOBS_DB_URL": db_url},
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_healthy_system_exits_0(registry, db_url, users, tmp_path):
    with registry.environment() as env:
        jobs = Jobs(env, users)
        jobs.completed()
        jobs.failed(error="HTTP 401: invalid key")
        old = jobs.completed()
        old.write_where([], {"create_date": dt.datetime.now(dt.UTC) - dt.timedelta(days=8)})
        env[WORKER].register(4, [], beat_seconds=60)  # a live worker, for a minute or so
    done = diagnostics(db_url, tmp_path, "--show-errors", "--cleanup-old")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Workers: 1 live" in out and "sim queue" in out and "healthy" in out
    assert "Stuck jobs\nNone." in out
    assert "sim-model" in out and "33.3%" in out  # 1 of 3 failed
    assert "Recurring errors" in out and "HTTP 401: invalid key" in out
    assert "Healthy: no problems found." in out
    assert "Deleted 1 finished job(s) created more than 7 days ago." in out


def test_trouble_exits_1_and_fix_stuck_says_what_it_did(registry, db_url, users, tmp_path):
    with registry.environment() as env:
        jobs = Jobs(env, users)
        dead_worker(env, "ghost:1")
        stalled, _lease, _start = jobs.running(owner="bob", worker="ghost:1")
        live = env[WORKER].register(4, [], beat_seconds=60)
        kept, _lease, _start = jobs.running(worker=live.name)
    found = diagnostics(db_url, tmp_path, "--json")
    assert found.returncode == 1, found.stdout + found.stderr
    report = json.loads(found.stdout)
    assert [(job["id"], job["kind"], job["fix"]) for job in report["stuck"]] == [
        (stalled.id, "worker_gone", "requeue")
    ]
    assert report["problems"] == [
        "1 job running without a live worker (theirs died or froze): `llmjobs diagnostics "
        "--fix-stuck` requeues it."
    ]
    assert report["workers_alive"] == 1
    fixed = diagnostics(db_url, tmp_path, "--fix-stuck")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "ghost:1, which is no longer live" in fixed.stdout  # the diagnosis before
    assert f"Fixed\nRequeued job {stalled.id} (its worker ghost:1 is not live)." in fixed.stdout
    assert "After fixing\nHealthy: no problems found." in fixed.stdout
    with registry.environment(readonly=True) as env:
        assert env[JOB].browse(stalled.id).state == "queued"
        assert env[JOB].browse(kept.id).state == "running"


SLOW = "[sim:tokens=60 token_delay=0.05]"  # three seconds a reply


@pytest.mark.slow
def test_fix_stuck_requeues_the_jobs_of_a_killed_worker(
    registry, db_url, start_workers, openai_server, tmp_path
):
    """A worker SIGKILLed mid-stream, its lease far from expiring (120 s): once it is no longer
    live, `--fix-stuck` requeues its jobs at once, and a fresh worker completes each once."""
    thread_ids = setup_threads(registry, openai_server.url, 3)
    with registry.environment() as env:
        jobs = env[JOB].create(
            [{"thread_id": t, "generation_inputs": {"prompt": f"{SLOW} q{t}"}} for t in thread_ids]
        )
        for job in jobs:
            job.action_queue()
        job_ids = jobs.ids
    [worker] = start_workers(1, lease=120)
    deadline = time.monotonic() + 60
    while True:
        with registry.environment(readonly=True) as env:
            if streaming(env, job_ids) == set(job_ids):
                break
        assert time.monotonic() < deadline, worker.log.read_text()
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    name = None
    deadline = time.monotonic() + 30
    while True:
        with registry.environment(readonly=True) as env:
            row = env[WORKER].search([("pid", "=", worker.pid)], limit=1)
            name = row.name
            if not row.is_live:
                running = env[JOB].search_count([("id", "in", job_ids), ("state", "=", "running")])
                break
        assert time.monotonic() < deadline, "the killed worker stayed live"
        time.sleep(0.2)
    assert running == 3  # its leases have not expired: nothing took the jobs back yet

    fixed = diagnostics(db_url, tmp_path, "--fix-stuck")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # no live worker is left
    for job_id in job_ids:
        assert f"Requeued job {job_id} (its worker {name} is not live)." in fixed.stdout
        assert "which is no longer live" in fixed.stdout
    assert "No worker is live" in fixed.stdout.split("After fixing")[1]
    with registry.environment(readonly=True) as env:
        assert set(env[JOB].browse(job_ids).mapped("state")) == {"queued"}

    start_workers(1)
    wait_finished(registry, job_ids, timeout=60)
    jobs = assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        for job in env[JOB].browse(jobs.ids):
            assert job.attempt_ids.mapped("outcome") == ["lost", "completed"]
            assert job.attempt_ids[0].worker == name
            assert "stopped beating" in job.attempt_ids[0].error_message
            assert job.retry_count == 1
