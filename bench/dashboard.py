"""The dashboard on a big database: ``overview()``, ``GET /api/overview`` and the first pages of
``GET /api/jobs`` (and of the web pages, when they exist) with 1,000,000 finished jobs in
PostgreSQL, timed against their target of 200 ms.

    LLMJOBS_TEST_PG_URL=postgresql://user:pw@127.0.0.1/db .venv/bin/python bench/dashboard.py
    .venv/bin/python bench/dashboard.py --db-url postgresql://... --jobs 200000 --runs 5

The database gets a schema of its own (dropped at the end), the tables of every addon of the
project (as ``llmjobs serve`` loads them), and:

- through the ORM: a manager and six ordinary users (with passwords and API tokens), three
  providers with two models each and their queues, four threads per user and provider;
- bulk-loaded with SQL (``INSERT ... SELECT generate_series``; fixture data only, the app never
  writes this way): ``--jobs`` finished jobs spread evenly over the last 30 days, 90%
  completed (each with its reply message and usage), 7% failed (alike errors with different
  ids), 3% cancelled, each with its attempt; one user ("nadia") owns only the 100 oldest;
- through the ORM and the job store: a few hundred active jobs: queued, running on a live
  worker (this process's row), waiting for a retry, and running on a dead worker.

Each request is timed warm: two runs first, then the median of ``--runs`` rounds over all of
them; HTTP requests go to the real app (``create_app`` under uvicorn on loopback) with httpx,
with an API token (the pages with a session cookie; a page that answers 404 is reported as not
there yet).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: its modules must not shadow the stdlib's

from addons.llm_generation_job import monitoring  # noqa: E402
from addons.llm_generation_job.store import JobStore  # noqa: E402
from core import Registry  # noqa: E402
from core.http import create_app  # noqa: E402
from core.testing import postgres_base_url, postgres_schema_url, served  # noqa: E402

TARGET_MS = 200.0
DAYS = 30
PASSWORD = "bench password"
PROVIDERS = ("openai-sim", "anthropic-sim", "local-sim")
USERS = ("alice", "bob", "carol", "dan", "erin")  # and nadia, who owns only the 100 oldest jobs
RARE_USER_JOBS = 100
ACTIVE = {"queued": 200, "running": 60, "retry_waiting": 20, "stalled": 10}


# -- the fixture ---------------------------------------------------------------------------
def create_people_and_providers(registry: Registry) -> dict:
    """Users, providers, models, queues and threads, through the ORM."""
    with registry.environment() as env:
        user_group = env.ref("base.group_user").id
        manager_group = env.ref("llm_thread.group_llm_manager").id
        logins = {"maya": [manager_group], **{u: [user_group] for u in (*USERS, "nadia")}}
        users = {}
        for login, groups in logins.items():
            user = env["res.users"].create({"login": login, "name": login, "groups_id": groups})
            user.set_password(PASSWORD)
            users[login] = user.id
        threads = []  # (thread, user, provider, model) of the bulk jobs' threads
        for name in PROVIDERS:
            provider = env["llm.provider"].create(
                {"name": name, "service": "openai", "api_base": "http://127.0.0.1:9/v1"}
            )
            models = env["llm.model"].create(
                [
                    {"name": f"{name}-large", "provider_id": provider.id, "default": True},
                    {"name": f"{name}-small", "provider_id": provider.id},
                ]
            )
            queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
            queue.write({"max_concurrent_jobs": 100})
            for login in (*USERS, "nadia"):
                for number in range(4):
                    model = models[number % 2]
                    thread = (
                        env["llm.thread"]
                        .with_user(users[login])
                        .create(
                            {
                                "name": f"{login} {number}",
                                "provider_id": provider.id,
                                "model_id": model.id,
                            }
                        )
                    )
                    threads.append((thread.id, users[login], provider.id, model.id, login))
        tokens = {
            login: env["res.users.apikey"].with_user(uid).generate("bench")[1]
            for login, uid in users.items()
        }
    return {"users": users, "threads": threads, "tokens": tokens}


# Bulk fixture data only: SQL straight into the tables the registry created. Row g (1..n) is
# job g, its attempt g and (completed) its reply message g; its time is spread evenly over the
# last 30 days, so a higher id is a newer job.
ROWS = """
    SELECT g,
           CAST(:now AS timestamptz) - make_interval(secs => :span * (:n - g) / :n) AS t,
           CASE WHEN g <= :rare THEN :rare_thread
                ELSE (CAST(:threads AS int[]))[1 + (g * 7) % :thread_count] END AS thread,
           CASE WHEN (g::bigint * 7919) % 1000 < 900 THEN 'completed'
                WHEN (g::bigint * 7919) % 1000 < 970 THEN 'failed' ELSE 'cancelled' END AS state,
           0.2 + (g % 13) * 0.15 AS wait, 2.0 + (g % 17) AS took, 0.1 + (g % 11) * 0.12 AS ttft
      FROM generate_series(1, :n) AS g
"""
ERROR = """
    CASE WHEN r.state = 'cancelled' THEN 'Cancelled while running.'
         WHEN r.state <> 'failed' THEN NULL
         WHEN r.g % 4 = 0 THEN 'HTTP 429 from the provider: rate limited (request req_'
                               || substr(md5(r.g::text), 1, 12) || '). Gave up after 4 attempts.'
         WHEN r.g % 4 = 1 THEN 'HTTP 500 from the provider: internal error. Gave up after 4 '
                               || 'attempts.'
         WHEN r.g % 4 = 2 THEN 'HTTP 400 from the provider: this model''s context is '
                               || (4096 + r.g % 5000) || ' tokens'
         ELSE 'The worker stopped renewing its lease (it died, froze or lost the database). '
              || 'Gave up after 4 attempts.' END
"""
BULK = [
    f"""
    INSERT INTO llm_message (id, create_date, write_date, create_uid, write_uid, thread_id,
                             llm_role, body, state, prompt_tokens, completion_tokens,
                             finish_reason)
    SELECT r.g, r.t, r.t, th.user_id, th.user_id, r.thread, 'assistant',
           'A reply of ' || (100 + r.g % 400) || ' tokens.', 'done', 20 + r.g % 50,
           100 + r.g % 400, CASE WHEN r.g % 10 = 0 THEN 'length' ELSE 'stop' END
      FROM ({ROWS}) AS r JOIN llm_thread th ON th.id = r.thread
     WHERE r.state = 'completed'
    """,
    f"""
    INSERT INTO llm_generation_job (id, create_date, write_date, create_uid, write_uid, name,
                                    thread_id, provider_id, model_id, user_id, state,
                                    generation_inputs, output_message_id, priority,
                                    retry_count, max_retries, error_message, error_kind,
                                    queued_at, started_at, completed_at, queue_duration,
                                    duration, is_active, cancel_requested)
    SELECT r.g, r.t, r.t + make_interval(secs => r.wait + r.took), th.user_id, th.user_id,
           th.name || ' - ' || m.name, r.thread, th.provider_id, th.model_id, th.user_id,
           r.state, CAST('{{"prompt": "A question"}}' AS json),
           CASE WHEN r.state = 'completed' THEN r.g END, 0,
           CASE WHEN r.state = 'failed' AND r.g % 4 <> 2 THEN 3 ELSE 0 END, 3, {ERROR},
           CASE WHEN r.state = 'failed' AND r.g % 4 = 2 THEN 'permanent'
                WHEN r.state = 'failed' THEN 'retryable' END,
           r.t, r.t + make_interval(secs => r.wait),
           r.t + make_interval(secs => r.wait + r.took), r.wait, r.took, false, false
      FROM ({ROWS}) AS r JOIN llm_thread th ON th.id = r.thread
      JOIN llm_model m ON m.id = th.model_id
    """,
    f"""
    INSERT INTO llm_generation_job_attempt (id, create_date, write_date, create_uid,
                                            write_uid, job_id, number, worker, started_at,
                                            first_token_at, ended_at, outcome, error_message,
                                            duration, provider_id, time_to_first_token)
    SELECT r.g, r.t, r.t, 1, 1, r.g, 1, 'bench-host:' || (100 + r.g % 4),
           r.t + make_interval(secs => r.wait),
           CASE WHEN r.state = 'completed' THEN r.t + make_interval(secs => r.wait + r.ttft) END,
           r.t + make_interval(secs => r.wait + r.took),
           CASE WHEN r.state = 'failed' AND r.g % 4 = 3 THEN 'lost' ELSE r.state END, {ERROR},
           r.took, th.provider_id, CASE WHEN r.state = 'completed' THEN r.ttft END
      FROM ({ROWS}) AS r JOIN llm_thread th ON th.id = r.thread
    """,
]
TABLES = ("llm_message", "llm_generation_job", "llm_generation_job_attempt")


def bulk_load(registry: Registry, fixture: dict, count: int) -> float:
    """The finished jobs, their attempts and replies; returns the seconds it took."""
    started = time.perf_counter()
    common = [t for t in fixture["threads"] if t[4] != "nadia"]
    rare = next(t for t in fixture["threads"] if t[4] == "nadia")
    params = {
        "now": dt.datetime.now(dt.UTC),
        "span": DAYS * 86400.0,
        "n": count,
        "rare": RARE_USER_JOBS,
        "rare_thread": rare[0],
        "threads": [t[0] for t in common],
        "thread_count": len(common),
    }
    with registry.engine.begin() as connection:
        for statement in BULK:
            connection.execute(sa.text(statement), params)
        for table in TABLES:
            connection.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
    with registry.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def add_active_jobs(registry: Registry, fixture: dict) -> None:
    """Queued, running, retry-waiting and stalled jobs, through the model and the job store;
    this process registers as the live worker running them."""
    threads = [t for t in fixture["threads"] if t[4] != "nadia"]
    with registry.environment() as env:
        live = env["llm.generation.worker"].register(16, [], beat_seconds=3600)
        beat = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        dead = env["llm.generation.worker"].create(
            {
                "name": "bench-dead:1",
                "host": "bench-dead",
                "pid": 1,
                "started_at": beat - dt.timedelta(hours=1),
                "last_beat_at": beat,
                "alive_until": beat + dt.timedelta(seconds=6),
            }
        )
        store = JobStore(env)
        jobs = env["llm.generation.job"]
        made = []
        for index in range(sum(ACTIVE.values())):
            thread_id, user_id = threads[index % len(threads)][:2]
            job = jobs.with_user(user_id).create({"thread_id": thread_id})
            job.action_queue()
            made.append(job.sudo())
        start = ACTIVE["queued"]
        for kind in ("running", "retry_waiting", "stalled"):
            worker = dead.name if kind == "stalled" else live.name
            for job in made[start : start + ACTIVE[kind]]:
                [lease] = store.claim(job.provider_id.id, worker, job_ids=[job.id])
                store.start_reply(lease)
                if kind == "retry_waiting":
                    store.fail(lease, "HTTP 503 from the provider: overloaded", retryable=True)
            start += ACTIVE[kind]


# -- timing --------------------------------------------------------------------------------
Probe = tuple[str, str, Callable[[], object] | str]  # request, as whom, the call (or a note)


def medians_ms(probes: list[Probe], runs: int) -> list[tuple[str, str, float | str]]:
    """Each call warmed twice (caches, plans, connections), then timed ``runs`` times in
    rounds over all of them, so that a slow moment of the machine hits them alike."""
    calls = [probe for probe in probes if not isinstance(probe[2], str)]
    for _request, _who, call in calls * 2:
        call()
    times: dict[int, list[float]] = {index: [] for index in range(len(probes))}
    for _ in range(runs):
        for index, (_request, _who, call) in enumerate(probes):
            if isinstance(call, str):
                continue
            started = time.perf_counter()
            call()
            times[index].append(time.perf_counter() - started)
    return [
        (request, who, call if isinstance(call, str) else statistics.median(times[i]) * 1000.0)
        for i, (request, who, call) in enumerate(probes)
    ]


def in_process(registry: Registry, uid: int) -> Callable[[], object]:
    def look() -> dict:
        with registry.environment(user=uid, readonly=True) as env:
            return monitoring.overview(env)

    return look


def get(client: httpx.Client, path: str) -> Callable[[], object]:
    def call() -> httpx.Response:
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response

    return call


def session(url: str, login: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60, follow_redirects=True)
    answer = client.post("/api/session", json={"login": login, "password": PASSWORD})
    answer.raise_for_status()
    return client


def measure(registry: Registry, fixture: dict, runs: int) -> list[tuple[str, str, float | str]]:
    users, tokens = fixture["users"], fixture["tokens"]
    probes: list[Probe] = [
        ("overview() in-process", "manager", in_process(registry, users["maya"])),
        ("overview() in-process", "user", in_process(registry, users["alice"])),
    ]
    with ExitStack() as stack:
        url = stack.enter_context(served(create_app(registry)))
        clients = {
            who: stack.enter_context(
                httpx.Client(
                    base_url=url, timeout=60, headers={"Authorization": f"Bearer {tokens[login]}"}
                )
            )
            for who, login in (("manager", "maya"), ("user", "alice"), ("rare user", "nadia"))
        }
        for path, who in (
            ("/api/overview", "manager"),
            ("/api/overview", "user"),
            ("/api/jobs", "manager"),
            ("/api/jobs", "user"),
            ("/api/jobs", "rare user"),
            ("/api/jobs?state=failed", "manager"),
            ("/api/jobs?state=failed", "user"),
            ("/api/jobs?state=failed", "rare user"),
            ("/api/jobs?state=queued", "manager"),
            ("/api/jobs?state=running", "user"),
            ("/api/diagnostics", "manager"),
        ):
            probes.append((f"GET {path}", who, get(clients[who], path)))
        for who, login in (("manager", "maya"), ("user", "alice")):
            browser = session(url, login)
            stack.callback(browser.close)
            for path in ("/web/", "/web/jobs"):
                there = browser.get(path).status_code != 404
                probes.append((f"GET {path}", who, get(browser, path) if there else "no page yet"))
        return medians_ms(probes, runs)


def report(rows: list[tuple[str, str, float | str]], count: int) -> None:
    print(f"\nWith {count:,} finished jobs (median of warm runs; target {TARGET_MS:.0f} ms):\n")
    print("| request | as | median | met |")
    print("|---|---|---|---|")
    for request, who, value in rows:
        if isinstance(value, str):
            print(f"| {request} | {who} | {value} | - |")
        else:
            met = "yes" if value < TARGET_MS else "**no**"
            print(f"| {request} | {who} | {value:.1f} ms | {met} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", help="a PostgreSQL database (default: LLMJOBS_TEST_PG_URL)")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="finished jobs to load")
    parser.add_argument("--runs", type=int, default=9, help="timed runs per request")
    args = parser.parse_args()
    base = args.db_url or postgres_base_url()
    if not base or not base.startswith("postgresql"):
        sys.exit("Give a PostgreSQL database: --db-url or LLMJOBS_TEST_PG_URL (postgresql://...).")
    with postgres_schema_url(base) as url:
        registry = Registry(url)  # every addon of the project, as `llmjobs serve` loads them
        try:
            fixture = create_people_and_providers(registry)
            print(f"Loading {args.jobs:,} finished jobs...", flush=True)
            seconds = bulk_load(registry, fixture, args.jobs)
            print(f"Loaded in {seconds:.0f} s; adding the active jobs.", flush=True)
            add_active_jobs(registry, fixture)
            report(measure(registry, fixture, args.runs), args.jobs)
        finally:
            registry.close()


if __name__ == "__main__":
    main()
