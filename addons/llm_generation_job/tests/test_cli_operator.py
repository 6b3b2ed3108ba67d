"""The operator's command line, run as the real ``llmjobs`` executable on SQLite and
PostgreSQL, with data made through the registry: ``jobs list|show|retry|cancel`` with the
API's filters (plain output and ``--json`` read back), ``queues set|pause|resume|list``,
``workers``, and ``chat`` with piped prompts, a reply stopped by Ctrl-C in each mode."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import time

import click
import pytest

from addons.llm_generation_job.cli.jobs import MOMENT
from addons.llm_thread.tests.command_line import Llmjobs, table

from .conftest import make_provider

LONG = "[sim:tokens=300 token_delay=0.01]"


def as_printed(model) -> dict:
    """A pydantic answer as the command line prints it in JSON."""
    return json.loads(json.dumps(model.model_dump(), default=lambda value: value.isoformat()))


@pytest.fixture
def cli(db_url, tmp_path, registry):
    return Llmjobs(db_url, tmp_path)


@pytest.fixture
def jobs_setup(registry, users, openai_server):
    """Providers 'sim' (on the simulator, with a queue) and 'other'; jobs of Alice's and
    Bob's in every state but running: their ids by name."""
    with registry.environment() as env:
        sim, model = make_provider(env, api_base=openai_server.url, name="sim")
        other, _ = make_provider(env, name="other")
        queue = env["llm.generation.queue"]._get_or_create_queue(sim.id)
        threads = env["llm.thread"]
        alice = threads.with_user(users["alice"]).create(
            {"name": "Alice's", "provider_id": sim.id, "model_id": model.id}
        )
        bob_other = threads.with_user(users["bob"]).create({"name": "B", "provider_id": other.id})
        bob_sim = threads.with_user(users["bob"]).create({"name": "B2", "provider_id": sim.id})

        def job(thread, state="draft", error=None):
            made = (
                env["llm.generation.job"]
                .with_user(thread.user_id)
                .create({"thread_id": thread.id, "generation_inputs": {"prompt": "q"}})
                .sudo()
            )
            if state != "draft":
                made.action_queue()
            if state == "failed":
                made.action_fail(error)
            elif state == "cancelled":
                made.action_cancel()
            return made.id

        ids = {
            "draft": job(alice),
            "queued": job(alice, "queued"),
            "quota": job(alice, "failed", "The provider said: quota exceeded for this key"),
            "timeout": job(alice, "failed", "Timed out waiting for the provider"),
            "cancelled": job(alice, "cancelled"),
            "bob_queued": job(bob_other, "queued"),
            "bob_quota": job(bob_sim, "failed", "Quota exceeded (bob)"),
        }
        return {**ids, "queue": queue.id, "sim": sim.id}


def test_jobs_are_listed_with_the_apis_filters_newest_first(cli, registry, jobs_setup):
    from addons.llm_generation_job.controllers.jobs import job_out

    ids = jobs_setup
    plain = cli.run(
        "jobs", "list", "--state", "failed", "--state", "queued", "--provider", "sim",
        "--user", "alice",
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    rows = table(plain.stdout)
    assert [int(row["ID"]) for row in rows] == [ids["timeout"], ids["quota"], ids["queued"]]
    assert [row["State"] for row in rows] == ["failed", "failed", "queued"]
    assert {(row["Provider"], row["User"], row["Model"]) for row in rows} == {
        ("sim", "alice", "sim-model")
    }
    assert rows[1]["Error"] == "The provider said: quota exceeded for this key"

    first = cli.run("jobs", "list", "--json", "-q", "QUOTA", "--limit", "1")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [job["id"] for job in page["items"]] == [ids["bob_quota"]]
    assert page["next_cursor"] == ids["bob_quota"]
    assert page["items"][0]["user_login"] == "bob"
    rest = cli.run(
        "jobs", "list", "--json", "--search", "quota", "--cursor", str(page["next_cursor"]),
        "--created-after", "1h", "--finished-before", "2999-01-01T00:00:00Z",
    )  # fmt: skip
    assert rest.returncode == 0, rest.stderr
    page = json.loads(rest.stdout)
    assert [job["id"] for job in page["items"]] == [ids["quota"]] and page["next_cursor"] is None
    with registry.environment(readonly=True) as env:
        api = as_printed(job_out(env["llm.generation.job"].browse(ids["quota"])))
    assert page["items"][0] == {**api, "model_name": "sim-model", "user_login": "alice"}

    unknown = cli.run("jobs", "list", "--provider", "nope")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip() == (
        "Error: No provider is named 'nope' or has that id: the providers are 'other', 'sim' "
        "(`llmjobs providers list`; `llmjobs providers add` creates one)."
    )
    with pytest.raises(click.BadParameter, match="'yesterday' is neither a date and time"):
        MOMENT.convert("yesterday", None, None)
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    assert abs(MOMENT.convert("2h", None, None) - two_hours_ago) < dt.timedelta(seconds=5)


def test_a_job_shows_its_inputs_reply_and_attempt_timeline_and_workers_are_listed(
    cli, registry, sim_thread, runner
):
    from addons.llm_generation_job.controllers.jobs import job_detail

    with registry.environment() as env:
        thread = env["llm.thread"].browse(sim_thread)
        updates = list(thread.generate_response("[sim:tokens=5] hi", use_queue=True, top_p=0.5))
    assert updates[-1]["type"] == "done"
    job_id = updates[-1]["job_id"]

    shown = cli.run("jobs", "show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    fields, attempts = shown.stdout.split("\n\n")
    record = dict(
        (label.strip(), value.strip())
        for label, value in (line.split(":", 1) for line in fields.splitlines()[1:])
    )
    reply = updates[-1]["message"]
    assert record["State"] == "completed" and record["Provider"] == "sim"
    assert record["Prompt"] == "[sim:tokens=5] hi"
    assert record["Reply"] == f"[done] {reply['body']}".strip()
    assert json.loads(record["Inputs"])["options"] == {"top_p": 0.5}
    assert record["Usage"] == f"{reply['prompt_tokens']} tokens in, 5 out, finish: stop"
    title, *timeline = attempts.splitlines()
    [attempt] = table("\n".join(timeline))
    assert title == "Attempts" and attempt["#"] == "1" and attempt["Outcome"] == "completed"
    assert attempt["Worker"] == runner.worker and attempt["Tokens in/out"].endswith("/5")

    as_json = cli.run("jobs", "show", str(job_id), "--json")
    assert as_json.returncode == 0, as_json.stderr
    with registry.environment(readonly=True) as env:
        api = as_printed(job_detail(env["llm.generation.job"].browse(job_id)))
    assert json.loads(as_json.stdout) == api

    workers = cli.run("workers")
    assert workers.returncode == 0, workers.stderr
    [worker] = table(workers.stdout)
    assert (worker["PID"], worker["Slots"], worker["Queues"]) == (str(os.getpid()), "4", "all")


def test_retry_and_cancel_say_what_happened_to_each_and_confirm_bulk_actions(
    cli, registry, jobs_setup
):
    ids = jobs_setup

    def states() -> dict[str, str]:
        with registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"]
            return {
                name: jobs.browse(ids[name]).state for name in ids if name not in ("queue", "sim")
            }

    retried = cli.run("jobs", "retry", str(ids["quota"]), str(ids["cancelled"]), "999")
    assert retried.returncode == 1
    assert retried.stdout == (
        f"Job {ids['quota']}: queued again (retry 1 of 3).\nRetried 1 of 3 job(s); 2 refused.\n"
    )
    assert retried.stderr.splitlines() == [
        f"Cannot retry generation job {ids['cancelled']}: it is cancelled.",
        "No generation job has the id 999.",
    ]
    assert states()["quota"] == "queued"

    declined = cli.run("jobs", "retry", "--all-matching", "--state", "failed", input="n\n")
    assert declined.returncode == 1
    assert "2 job(s) match: retry them all? [y/N]" in declined.stderr
    assert declined.stderr.strip().endswith("Nothing done.")
    before = states()
    assert before["timeout"] == before["bob_quota"] == "failed"

    cancelled = cli.run(
        "jobs", "cancel", "--all-matching", "--state", "queued", "--provider", "sim", input="y\n"
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert "2 job(s) match: cancel them all?" in cancelled.stderr
    assert cancelled.stdout.splitlines() == [
        f"Job {ids['queued']}: cancelled.",
        f"Job {ids['quota']}: cancelled.",
        "Cancelled 2 of 2 job(s); 0 refused.",
    ]
    after = states()
    assert after["queued"] == after["quota"] == "cancelled"
    assert after["bob_queued"] == "queued"  # another provider's

    bobs = cli.run("jobs", "cancel", "--all-matching", "--yes", "--json", "--user", "bob")
    assert bobs.returncode == 1
    assert json.loads(bobs.stdout) == {
        "matched": 2,
        "done": 1,
        "refused": [
            {
                "id": ids["bob_quota"],
                "reason": f"Cannot cancel generation job {ids['bob_quota']}: it is failed; "
                "only queued or running jobs, or failed ones waiting for their retry, can be "
                "cancelled.",
            }
        ],
    }
    assert states()["bob_queued"] == "cancelled"


def test_queues_are_configured_paused_and_resumed_by_provider_name_or_id(cli, registry, jobs_setup):
    queue_id = jobs_setup["queue"]

    def queue():
        with registry.environment(readonly=True) as env:
            found = env["llm.generation.queue"].browse(queue_id)
            return found.read(
                [
                    "enabled",
                    "max_concurrent_jobs",
                    "auto_retry_failed",
                    "retry_delay_minutes",
                    "attempt_deadline_seconds",
                ]
            )[0]

    changed = cli.run(
        "queues", "set", "sim", "--limit", "7", "--no-auto-retry", "--retry-delay", "2",
        "--attempt-deadline", "90",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("Queue 'sim' changed.\n")
    assert queue() == {
        "id": queue_id,
        "enabled": True,
        "max_concurrent_jobs": 7,
        "auto_retry_failed": False,
        "retry_delay_minutes": 2,
        "attempt_deadline_seconds": 90.0,
    }

    paused = cli.run("queues", "pause", str(queue_id))
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("Queue 'sim' paused: it starts no more jobs")
    assert queue()["enabled"] is False

    listed = cli.run("queues", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {row["Queue"]: row for row in table(listed.stdout)}
    assert set(rows) == {"sim", "other"}  # 'other' got its queue with its first job
    row = rows["sim"]
    assert row["ID"] == str(queue_id)
    assert (row["Health"], row["Backlog"], row["Running/limit"]) == ("disabled", "1", "0/7")
    assert (row["Workers"], row["Retry"], row["Attempt deadline"]) == ("0", "off", "90 s")
    assert row["Oldest queued"].endswith("s") and row["Failed"] == "3"

    resumed = cli.run("queues", "resume", "sim", "--json")
    assert resumed.returncode == 0, resumed.stderr
    answer = json.loads(resumed.stdout)
    assert (answer["id"], answer["enabled"], answer["health"]) == (queue_id, True, "healthy")
    assert answer["job_counts"]["queued"] == 1 and answer["max_concurrent_jobs"] == 7
    assert queue()["enabled"] is True

    unknown = cli.run("queues", "set", "nope", "--limit", "3")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "Error: No queue is named 'nope' (a provider's name) or has that id: the queues are "
        "those of 'sim', 'other' (`llmjobs queues list`)."
    )


def _chat_interrupted(cli: Llmjobs, args: list[str], prompts: list[str]) -> tuple:
    """Run ``llmjobs chat`` on piped prompts, press Ctrl-C once the first reply has begun
    to print, and return (exit status, stdout, stderr)."""
    process = cli.start("chat", *args)
    process.stdin.write("".join(f"{prompt}\n" for prompt in prompts).encode())
    process.stdin.close()
    process.stdin = None  # communicate() must not flush it
    printed, deadline = b"", time.monotonic() + 30
    while len(printed) < 20:
        assert time.monotonic() < deadline, "the first reply did not begin"
        if select.select([process.stdout], [], [], 1)[0]:
            data = os.read(process.stdout.fileno(), 1024)
            assert data, process.stderr.read().decode()
            printed += data
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=60)
    return process.returncode, (printed + rest).decode(), errors.decode()


def _thread_id(stderr: str) -> int:
    return int(stderr.split()[1])  # "Thread 3 (...) with provider ..."


def test_chat_streams_direct_replies_and_ctrl_c_stops_one_but_not_the_session(
    cli, registry, openai_server
):
    with registry.environment() as env:
        make_provider(env, api_base=openai_server.url, name="sim")
    status, stdout, stderr = _chat_interrupted(
        cli,
        ["--provider", "sim", "--direct"],
        [f"{LONG} a long one", "[sim:status=400 message=nope] x", "", "hello", "/quit", "no"],
    )
    assert status == 1, stderr  # one reply failed
    lines = stderr.splitlines()
    assert lines[0].endswith("with provider 'sim', model sim-model.")
    assert lines[1:3] == [
        "[stopped: the partial reply is kept, marked cancelled]",
        "[error] Provider 'sim' failed: HTTP 400 Bad Request: nope",
    ]
    assert len(lines) == 4 and lines[3].startswith("[done: 20 tokens, ")
    with registry.environment(readonly=True) as env:
        replies = env["llm.message"].search(
            [("thread_id", "=", _thread_id(stderr)), ("llm_role", "=", "assistant")], order="id"
        )
        assert replies.mapped("state") == ["cancelled", "error", "done"]  # none after /quit
        partial, _failed, last = replies.mapped("body")
    printed = stdout.splitlines()
    assert len(printed) == 2  # the partial reply and the last; the failed one printed nothing
    assert printed[0] and partial.startswith(printed[0]) and len(partial.split()) < 300
    assert printed[1] == last


def test_chat_follows_queued_jobs_and_ctrl_c_cancels_the_job(cli, registry, sim_thread, runner):
    status, stdout, stderr = _chat_interrupted(
        cli, ["--thread", str(sim_thread), "--queue"], [f"{LONG} long", "[sim:tokens=3] short"]
    )
    assert status == 0, stderr
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].search([("thread_id", "=", sim_thread)], order="id")
        assert jobs.mapped("state") == ["cancelled", "completed"]
        first, second = jobs.ids
        reply = jobs[1].output_message_id.body
    assert f"[job {first}: " in stderr and f"[job {second}: " in stderr
    assert f"[job {first} cancelled: the partial reply is kept]" in stderr
    assert "[done: 3 tokens" in stderr
    assert stdout.splitlines()[-1] == reply
