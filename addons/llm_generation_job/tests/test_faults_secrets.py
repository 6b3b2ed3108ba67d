"""No API key in anything the fault suite produces, on SQLite and PostgreSQL.

A condensed fault scenario with real ``llmjobs -vv worker`` processes (debug logging) and a
provider whose distinctive key the simulator requires: a 503 with Retry-After, a 500 and a
stream cut midway (each retried), a worker SIGKILLed mid-stream (its job recovered by the
other), a second provider with the wrong key (401), direct generations failing in this
process, and the operator's commands (``jobs list``, ``jobs show``, ``diagnostics``,
``providers test``) as subprocesses at debug level. Then everything is collected: every
worker's log, this process's log records at DEBUG, every job's and attempt's error, every
message, the commands' output, the HTTP API's answers, and a dump of the database
(``pg_dump`` of the test's schema, or SQLite's ``iterdump``). No form of either key is in any
of them; the dump holds each key only encrypted (its provider's ``api_key`` column, which
decrypts to it), never in clear.

``test_secrets`` covers the pasted-key forms and the header check; this test covers what the
faults, the recovery and the operator's tools print.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from addons.llm_generation_job.follow import wait_finished
from core.cli import _mount_addon_commands, main
from core.config import secret_key
from core.redaction import forms

pytestmark = pytest.mark.slow

KEY = "sk-live-" + secrets.token_hex(16)
WRONG_KEY = "sk-live-" + secrets.token_hex(16)
LEASE_SECONDS = 3
LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent))


def _setup(registry, users, server) -> dict:
    """Two providers on the simulator (the right key and a wrong one), immediate retries, and
    a thread of Alice's per generation; committed."""
    ids = {}
    with registry.environment() as env:
        for name, key in (("good", KEY), ("wrong", WRONG_KEY)):
            provider = env["llm.provider"].create(
                {
                    "name": name,
                    "service": "openai",
                    "api_base": server.url,
                    "api_key": key,
                    "timeout": 2.0,
                }
            )
            env["llm.model"].create({"name": "m", "provider_id": provider.id, "default": True})
            env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
                {"retry_delay_minutes": 0, "max_concurrent_jobs": 8}
            )
            ids[name] = provider.id
        threads = env["llm.thread"].with_user(users["alice"])
        for name in ("slow", "503", "500", "cut", "wrong", "direct", "direct_wrong"):
            provider = ids["wrong" if "wrong" in name else "good"]
            ids[f"thread_{name}"] = threads.create({"name": name, "provider_id": provider}).id
    return ids


def _queue(registry, users, thread_id: int, prompt: str) -> int:
    with registry.environment(user=users["alice"]) as env:
        updates = env["llm.thread"].browse(thread_id).generate_response(prompt, use_queue=True)
        next(updates)  # queued and committed; the worker does the rest
        updates.close()
        return env["llm.thread"].browse(thread_id).generation_job_ids[:1].id


def _wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def _live_workers(registry, provider_id: int) -> int:
    with registry.environment(readonly=True) as env:
        return env["llm.generation.worker"].live_count(provider_id)


def _streaming_worker(registry, job_id: int) -> str | None:
    """The ``host:pid`` of the worker streaming the job, once its reply has begun."""
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(job_id)
        running = job.attempt_ids.filtered(lambda attempt: attempt.outcome == "running")
        pieces = env["llm.generation.job.chunk"].search_count(
            [("job_id", "=", job_id), ("kind", "=", "text")]
        )
        return running[:1].worker if running and pieces else None


def _commands(db_url: str, tmp_path: Path, job_ids: list[int]) -> list[str]:
    """The output of the operator's commands, at debug level, run at once."""
    crons = tmp_path / "no-crons.yaml"
    crons.write_text("[]\n")
    env = {**os.environ, "LLMJOBS_DB_URL": db_url, "LLMJOBS_CRON_FILE": str(crons)}
    _mount_addon_commands([])
    commands = [
        ["jobs", "list", "--json"],
        *(["jobs", "show", str(job_id)] for job_id in job_ids),
        ["providers", "list", "--json"],
        *([["diagnostics", "--show-errors"]] if "diagnostics" in main.commands else []),
        ["providers", "test", "wrong"],
    ]
    running = [
        subprocess.Popen(
            [LLMJOBS, "-vv", *command],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    outputs = []
    for command, process in zip(commands, running, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, (command, stderr)
        outputs.append(f"$ llmjobs {' '.join(command)}\n{stdout}\n{stderr}")
    assert "401" in outputs[-1], outputs[-1]  # `providers test wrong` met the wrong key
    return outputs


def _dump(db_url: str) -> str:
    """The whole test database as SQL text."""
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database) as connection:
            return "\n".join(connection.iterdump())
    schema = url.query["options"].partition("search_path=")[2]
    plain = url.set(drivername="postgresql", query={})
    dumped = subprocess.run(
        ["pg_dump", "--schema", schema, "--no-owner", plain.render_as_string(hide_password=False)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "CREATE TABLE" in dumped.stdout
    return dumped.stdout


def _stored_keys(registry) -> dict[str, str]:
    """Each provider's ``api_key`` column as stored (ciphertext)."""
    table = registry.metadata.tables["llm_provider"]
    with registry.environment(readonly=True) as env:
        rows = env.cr.execute(sa.select(table.c.name, table.c.api_key)).all()
    return dict(rows)


def _api_answers(api, ids: dict, job_ids: list[int]) -> list[str]:
    manager, alice = api.client("manager"), api.client("alice")
    paths = ["/api/providers", f"/api/providers/{ids['good']}", "/api/jobs", "/api/queues"]
    paths += [f"/api/jobs/{job_id}" for job_id in job_ids]
    for path in paths:
        assert manager.get(path).status_code == 200, path
    assert manager.get("/metrics").status_code == 200
    for name in ("wrong", "cut"):
        assert alice.get(f"/api/threads/{ids[f'thread_{name}']}/messages").status_code == 200
    return list(api.responses)


def test_no_key_in_the_logs_errors_outputs_or_dump_of_a_fault_scenario(
    registry, db_url, users, make_simulator, start_workers, api, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG)
    server = make_simulator("openai", api_key=KEY, tokens=8)
    ids = _setup(registry, users, server)
    workers = start_workers(2, lease=LEASE_SECONDS, options=("-vv",))
    _wait_for(lambda: _live_workers(registry, ids["good"]) == 2, "two live workers")

    texts: list[str] = []
    with registry.environment(user=users["alice"]) as env:  # failures in this process
        for name, prompt in (("direct", "[sim:status=500] no"), ("direct_wrong", "hello")):
            thread = env["llm.thread"].browse(ids[f"thread_{name}"])
            updates = list(thread.generate_response(prompt, use_queue=False))
            assert updates[-1]["type"] == "error", updates
            texts.append(repr(updates))

    # A worker SIGKILLed mid-stream: the other takes its job back after the lease.
    slow = _queue(registry, users, ids["thread_slow"], "[sim:tokens=30 token_delay=0.05] slow")
    where = _wait_for(lambda: _streaming_worker(registry, slow), "the slow job to stream")
    [victim] = [w for w in workers if where.endswith(f":{w.pid}")]
    victim.send_signal(signal.SIGKILL)

    # Provider faults, each failing one attempt (which job meets which is the workers' race)
    # then retried; the wrong key, refused for good (the simulator refuses it before it takes
    # a fault).
    server.push_fault(status=503, retry_after=1)
    server.push_fault(status=500)
    server.push_fault(cut_after=3)
    job_ids = [slow] + [
        _queue(registry, users, ids[f"thread_{name}"], f"tell me ({name})")
        for name in ("503", "500", "cut", "wrong")
    ]
    wait_finished(registry, job_ids, timeout=60)

    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].browse(job_ids)
        story = [(j.state, j.attempt_ids.mapped("outcome"), j.error_message) for j in jobs]
        assert jobs.mapped("state") == ["completed"] * 4 + ["failed"], story
        assert "lost" in jobs[0].attempt_ids.mapped("outcome")  # recovered from the kill
        outcomes = [outcome for job in jobs[:4] for outcome in job.attempt_ids.mapped("outcome")]
        assert outcomes.count("failed") == 3, story
        assert "401" in jobs[4].error_message
        texts += [text for text in jobs.mapped("error_message") if text]
        texts += [text for text in jobs.mapped("attempt_ids.error_message") if text]
        messages = env["llm.message"].search([])
        texts += [f"{m.body}\n{m.error or ''}" for m in messages]
    texts += _commands(db_url, tmp_path, [job_ids[0], job_ids[-1]])  # recovered, refused
    texts += _api_answers(api, ids, job_ids)
    time.sleep(0.5)  # the workers' last lines reach their logs
    logs = [worker.log.read_text() for worker in workers]
    assert all(" DEBUG " in log for log in logs)  # the workers logged at debug level
    texts += [*logs, caplog.text]
    dump = _dump(db_url)
    texts.append(dump)

    for text in texts:
        for form in forms(KEY) | forms(WRONG_KEY):
            assert form not in text, f"a key appears as {form!r} in:\n{text[:2000]}"
    stored = _stored_keys(registry)
    fernet = Fernet(secret_key())
    for name, key in (("good", KEY), ("wrong", WRONG_KEY)):
        assert stored[name] in dump  # the one place a key is: encrypted, in its column
        assert fernet.decrypt(stored[name].encode()).decode() == key
