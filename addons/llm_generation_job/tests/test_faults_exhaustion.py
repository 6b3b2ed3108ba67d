"""Fault injection, exhausted resources: a worker process allowed far fewer open files than
its concurrency needs (each stream holds a socket, each database connection one more) is
given far more jobs than it can hold. It says so when it starts and runs fewer at once, and
every job waits its turn: none fails for it, each completes once."""

from __future__ import annotations

import shutil

import pytest

from addons.llm_generation_job.follow import wait_finished

from .test_worker_processes import assert_one_reply_per_job, setup_threads

pytestmark = pytest.mark.slow

FILES = 96  # open files the worker may have, all kinds together
CONCURRENCY = 150  # streams it is asked to run at once: each needs a socket
JOBS = 300
PROMPT = "[sim:tokens=20 token_delay=0.03] q"


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_a_worker_short_of_files_runs_every_job_and_fails_none(
    registry, start_workers, openai_server
):
    thread_ids = setup_threads(registry, openai_server.url, JOBS, max_concurrent=JOBS)
    with registry.environment() as env:
        jobs = env["llm.generation.job"].create(
            [
                {
                    "thread_id": t,
                    "generation_inputs": {"prompt": "[sim:tokens=20 token_delay=0.03] q"},
                }
                for t in thread_ids
            ]
        )
        for job in jobs:
            job.action_queue()
        job_ids = jobs.ids
    [worker] = start_workers(
        1, concurrency=CONCURRENCY, prefix=("prlimit", f"--nofile={FILES}:{FILES}")
    )
    wait_finished(registry, job_ids, timeout=240)
    assert_one_reply_per_job(registry, job_ids)
    with registry.environment(readonly=True) as env:
        attempts = env["llm.generation.job.attempt"].search([("job_id", "in", job_ids)])
        assert set(attempts.mapped("outcome")) <= {"completed", "interrupted"}
        assert len(attempts.filtered(lambda a: a.outcome == "completed")) == JOBS
        jobs = env["llm.generation.job"].browse(job_ids)
        assert set(jobs.mapped("retry_count")) == {0}  # a handed-back job spent no retry
    log = worker.log.read_text()
    allowed = (FILES - 64) // 2
    assert f"may open {FILES} files at most" in log and f"it runs {allowed} jobs at once" in log
    with registry.environment(readonly=True) as env:
        [row] = env["llm.generation.worker"].search([("pid", "=", worker.pid)])
        assert row.slots == allowed
