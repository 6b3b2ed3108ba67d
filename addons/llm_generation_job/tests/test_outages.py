"""The database failing under streaming workers (real processes): connections dropped again
and again on PostgreSQL, the PostgreSQL server restarted, the SQLite file locked past the busy
timeout. Every job completes, once, with its retries unused, and soon after the outage: no
queue stalls for a lease; each worker's log says so in two lines."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from addons.llm_generation_job.follow import wait_finished
from addons.llm_thread.simulator import reply_text
from core.redaction import forms
from core.testing import postgres_required

from .conftest import make_provider, streaming
from .test_secrets import KEY, database_dump

pytestmark = pytest.mark.slow

JOBS = 24
PROMPT = "[sim:tokens=60 token_delay=0.04] tell me about outages"


def queue_streaming_jobs(registry, api_base, api_key="sk-test"):
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=api_base, api_key=api_key)
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            {"max_concurrent_jobs": JOBS}
        )
        threads = env["llm.thread"].create(
            [
                {"name": f"t{n}", "provider_id": provider.id, "model_id": model.id}
                for n in range(JOBS)
            ]
        )
        jobs = env["llm.generation.job"].create(
            [{"thread_id": t.id, "generation_inputs": {"prompt": PROMPT}} for t in threads]
        )
        for job in jobs:
            job.action_queue()
        return jobs.ids


def wait_until_streaming(registry, job_ids, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        with registry.environment(readonly=True) as env:
            if len(streaming(env, job_ids)) >= len(job_ids) // 2:
                return
        assert time.monotonic() < deadline, "the workers never streamed"
        time.sleep(0.05)


def assert_the_logs_say_it_once(workers, timeout=10.0):
    """One warning when the database went away, one line when it was back (once it has been
    for a second and a write went through: a beat at the latest); no traceback."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        while "The database is reachable again" not in worker.log.read_text():
            assert time.monotonic() < deadline, worker.log.read_text()
            time.sleep(0.2)
        log = worker.log.read_text()
        assert "Traceback" not in log, log
        assert log.count("The database is unavailable") == 1, log
        assert log.count("The database is reachable again") == 1, log


def assert_each_job_completed_once(registry, job_ids):
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("state")) == {"completed"}
        assert set(jobs.mapped("retry_count")) == {0}  # the outage cost no retry
        outcomes = set(jobs.mapped("attempt_ids.outcome"))
        assert outcomes <= {"completed", "interrupted"}, outcomes
        replies = env["llm.message"].search([("llm_role", "=", "assistant")])
        assert len(replies) == len(job_ids)
        assert sorted(jobs.mapped("output_message_id").ids) == sorted(replies.ids)
        assert set(replies.mapped("body")) == {reply_text(PROMPT, 60)}


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_dropped_connections_mid_stream_fail_no_job(registry, db_url, start_workers, openai_server):
    """Defect 4: connections dropped once a second for 6 s failed 18 of 48 jobs for good,
    and a 2.5 s restart stalled the queue for a whole lease."""
    name = "llmjobs-outage-test"
    workers = start_workers(
        2, concurrency=JOBS // 2, LLMJOBS_DB_URL=f"{db_url}&application_name={name}"
    )
    job_ids = queue_streaming_jobs(registry, openai_server.url)
    wait_until_streaming(registry, job_ids)
    terminate = sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = :name"
    )
    dropped = 0
    with registry.engine.connect() as admin:
        for _ in range(60):  # every 50 ms for 3 s, while the replies stream: connections
            dropped += admin.execute(terminate, {"name": name}).scalar_one()  # die in the
            admin.commit()  # middle of
            time.sleep(0.05)  # transactions
    assert dropped >= 10  # connections died again and again (a worker holds only a few)
    outage_over = time.monotonic()
    wait_finished(registry, job_ids, timeout=60)
    assert time.monotonic() - outage_over < 20  # the lease is 30 s: nobody waited for it
    assert_each_job_completed_once(registry, job_ids)
    assert_the_logs_say_it_once(workers)


def local_cluster(db_url: str) -> list[str]:
    """The ``pg_ctlcluster`` arguments of the local server behind ``db_url``; the test is
    skipped (failed where PostgreSQL tests are required, as in CI) when it cannot restart it."""
    port = sa.engine.make_url(db_url).port or 5432
    host = sa.engine.make_url(db_url).host or "localhost"
    lister = shutil.which("pg_lsclusters")
    reason = None
    if host not in ("127.0.0.1", "localhost", "::1"):
        reason = f"the PostgreSQL server at {host} is not on this machine"
    elif lister is None or os.geteuid() != 0:
        reason = "restarting PostgreSQL needs pg_ctlcluster and root"
    else:
        for line in subprocess.run(
            [lister, "--no-header"], capture_output=True, text=True
        ).stdout.splitlines():
            version, name, cluster_port, status, *_ = line.split()
            if int(cluster_port) == port and status == "online":
                return [version, name]
        reason = f"no online local cluster listens on port {port}"
    if postgres_required():
        pytest.fail(f"Cannot restart PostgreSQL: {reason}.")
    pytest.skip(f"Cannot restart PostgreSQL: {reason}.")


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_postgresql_restart_under_streaming_workers_fails_no_job(
    registry, db_url, start_workers, openai_server
):
    """The server stopped (fast: every connection cut, transactions aborted) for 2.5 s while
    two workers stream, then started again."""
    cluster = local_cluster(db_url)
    workers = start_workers(2, concurrency=JOBS // 2, options=["-vv"])  # debug logging
    job_ids = queue_streaming_jobs(registry, openai_server.url, api_key=KEY)
    wait_until_streaming(registry, job_ids)
    subprocess.run(["pg_ctlcluster", "--mode", "fast", *cluster, "stop"], check=True)
    try:
        time.sleep(2.5)
    finally:
        subprocess.run(["pg_ctlcluster", *cluster, "start"], check=True)
    back = time.monotonic()
    registry.engine.dispose()  # this process's pooled connections died with the server
    wait_finished(registry, job_ids, timeout=60)
    assert time.monotonic() - back < 20  # the lease is 30 s: nobody waited for it
    assert_each_job_completed_once(registry, job_ids)
    assert_the_logs_say_it_once(workers)
    # What the fault left behind (debug logs, error texts, every row) holds no API key.
    time.sleep(0.5)  # the workers' last lines reach their logs
    texts = [w.log.read_text() for w in workers] + [database_dump(registry)]
    assert "DEBUG" in texts[0]
    for text in texts:
        for form in forms(KEY):
            assert form not in text, f"the key appears as {form!r}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_locked_past_the_busy_timeout_fails_no_job(
    registry, db_url, start_workers, openai_server
):
    """Defect 4: SQLite locked by another writer past the busy timeout failed 7 of 100 jobs
    for good."""
    workers = start_workers(2, concurrency=JOBS // 2, LLMJOBS_SQLITE_BUSY_TIMEOUT_MS="500")
    job_ids = queue_streaming_jobs(registry, openai_server.url)
    wait_until_streaming(registry, job_ids)
    locker = sqlite3.connect(sa.engine.make_url(db_url).database, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the database for 2.5 s
    threading.Event().wait(2.5)
    locker.execute("ROLLBACK")
    locker.close()
    outage_over = time.monotonic()
    wait_finished(registry, job_ids, timeout=60)
    assert time.monotonic() - outage_over < 20
    assert_each_job_completed_once(registry, job_ids)
    assert_the_logs_say_it_once(workers)
    with registry.environment(readonly=True) as env:
        assert env.cr.execute(sa.text("PRAGMA integrity_check")).scalar_one() == "ok"
