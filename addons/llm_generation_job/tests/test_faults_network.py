"""Fault injection, many machines, on PostgreSQL: three worker hosts, each in a network
namespace of its own, reach PostgreSQL and the provider on a fourth address, the gateway of
their LAN; one host is cut off (its link down) for longer than a lease while it streams.

What must hold: the other hosts take its jobs over within about a lease (its attempts recorded
as lost, each job run again elsewhere), and once it is back its stale attempts can neither
complete nor log a piece of a reply; at the end every job completed exactly once, each thread
has exactly one assistant reply, no job is left running.

PostgreSQL is reached through a TCP forwarder on the gateway address (to the server the tests
use), so that the server's configuration (``listen_addresses``, ``pg_hba.conf``) stays as it
is: reconfiguring it would need a restart, under the other tests using the same server. The
simulated provider listens on the gateway address itself. Needs CAP_NET_ADMIN (CI runs as
root); elsewhere it skips and says why.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from addons.llm_generation_job.follow import wait_finished
from addons.llm_thread.simulator import reply_text

from . import netns
from .conftest import streaming
from .test_worker_processes import assert_one_reply_per_job, setup_threads

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(120)]

HOSTS = 3
LEASE = 4  # seconds (see test_worker_processes.LEASE_SECONDS for why not shorter)
MAINTENANCE = LEASE / 3  # how often a worker looks for expired leases
SLOTS = 8  # per worker: two hosts can take over all the jobs of the third at once
JOBS = 12  # one per thread
TOKENS = 60
PROMPT = f"[sim:tokens={TOKENS} token_delay=0.1] how do machines fail?"
REPLY_SECONDS = TOKENS * 0.1
# A host cut off in the middle of a transaction leaves it open on the server, holding its jobs'
# rows (and, mid-claim, its queue's row): nobody could take them over until it came back (the
# server cannot tell a silent host from a slow one). The server ends such a transaction once
# idle this long (core/database.py; below the lease, as the README says to set it): with
# ending turned off, this test failed in 3 runs of 19.
IDLE_TRANSACTION_TIMEOUT = LEASE / 2


@pytest.fixture
def lan():
    """Three hosts on a LAN of their own, removed after the test."""
    reason = netns.unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the many-machines test, but {reason}")
        pytest.skip(f"The many-machines test needs network namespaces: {reason}")
    with netns.Lan(HOSTS) as made:
        yield made


@pytest.fixture
def lan_db_url(lan, db_url):
    """``db_url`` as the hosts reach it: the LAN's gateway, forwarded to the server."""
    parts = urlsplit(db_url)
    with netns.TcpForwarder(lan.gateway, (parts.hostname, parts.port or 5432)) as forwarder:
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{lan.gateway}:{forwarder.port}"
        yield urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def start_on_host(lan_db_url, start_workers):
    """``start_on_host(host)``: an ``llmjobs worker`` process on the host (stopped before the
    LAN and the forwarder go: this fixture is set up after them)."""

    def start(host: netns.Host):
        return start_workers(
            1,
            concurrency=SLOTS,
            lease=LEASE,
            prefix=host.command(),
            LLMJOBS_DB_URL=lan_db_url,
            LLMJOBS_PG_IDLE_TRANSACTION_TIMEOUT=str(IDLE_TRANSACTION_TIMEOUT),
        )[0]

    return start


def queue_streaming_jobs(registry, thread_ids) -> list[int]:
    with registry.environment() as env:
        jobs = env["llm.generation.job"].create(
            [{"thread_id": t, "generation_inputs": {"prompt": PROMPT}} for t in thread_ids]
        )
        for job in jobs:
            job.action_queue()
        return jobs.ids


def wait_for(what: str, check, timeout: float, every: float = 0.1) -> None:
    """Until ``check()`` is true, looked at every ``every`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(every)


def running_attempts(registry, job_ids) -> dict[int, str]:
    """job id -> the worker (host:pid) of its running attempt."""
    with registry.environment(readonly=True) as env:
        attempts = env["llm.generation.job.attempt"].search(
            [("job_id", "in", job_ids), ("outcome", "=", "running")]
        )
        return {a.job_id.id: a.worker for a in attempts}


def pid_of(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def live_workers(registry, pids) -> int:
    with registry.environment(readonly=True) as env:
        return env["llm.generation.worker"].search_count(
            [("pid", "in", list(pids)), ("is_live", "=", True)]
        )


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_host_cut_off_past_its_lease_loses_its_jobs_to_the_others_and_writes_nothing_late(
    lan, registry, start_on_host, make_simulator
):
    simulator = make_simulator("openai", host=lan.gateway)
    thread_ids = setup_threads(registry, simulator.url, JOBS, max_concurrent=JOBS)
    processes = {host: start_on_host(host) for host in lan.hosts}
    hosts = {process.pid: host for host, process in processes.items()}
    wait_for("the workers started", lambda: live_workers(registry, hosts) == HOSTS, 30)
    job_ids = queue_streaming_jobs(registry, thread_ids)

    def all_streaming():
        with registry.environment(readonly=True) as env:
            return streaming(env, job_ids) == set(job_ids)

    wait_for("every job streams", all_streaming, 30, every=0.05)
    running = running_attempts(registry, job_ids)
    busiest = collections.Counter(running.values()).most_common(1)[0][0]
    cut_pid = pid_of(busiest)
    cut_host = hosts[cut_pid]
    cut_jobs = sorted(job for job, worker in running.items() if worker == busiest)

    def taken_over():
        with registry.environment(readonly=True) as env:
            attempts = env["llm.generation.job.attempt"].search(
                [("job_id", "in", cut_jobs), ("number", "=", 2)]
            )
            return len(attempts) == len(cut_jobs)

    cut_at = dt.datetime.now(dt.UTC)
    cut_started = time.monotonic()
    with lan.cut_off(cut_host):
        wait_for("the other hosts took the jobs over", taken_over, 3 * LEASE)
        with registry.environment(readonly=True) as env:
            stale_pieces = env["llm.generation.job.chunk"].search_count(
                [("job_id", "in", cut_jobs), ("attempt", "=", 1)]
            )
            stale = env["llm.generation.job.attempt"].search(
                [("job_id", "in", cut_jobs), ("number", "=", 1)]
            )
            # The provider sends the stale replies to their end into the cut link: the host
            # gets them whole when it is back, and tries to record them completed.
            sent = max(stale.mapped("first_token_at")) + dt.timedelta(seconds=REPLY_SECONDS)
        time.sleep(max(0.0, (sent - dt.datetime.now(dt.UTC)).total_seconds() + 0.5))
    mended_at = dt.datetime.now(dt.UTC)
    assert time.monotonic() - cut_started > LEASE

    wait_finished(registry, job_ids, timeout=60)

    def back_and_idle():
        # Its writer reached the database again and beat, with none of its streams left: the
        # stale ones were refused and stopped (a beat counts the streams not yet recorded).
        with registry.environment(readonly=True) as env:
            row = env["llm.generation.worker"].search([("pid", "=", cut_pid)])
            return row.last_beat_at > mended_at and row.running_jobs == 0

    wait_for("the cut-off host came back", back_and_idle, 30, every=0.2)

    assert_one_reply_per_job(registry, job_ids)  # completed, once; one reply per job
    with registry.environment(readonly=True) as env:
        replies = env["llm.message"].search([("llm_role", "=", "assistant")])
        assert collections.Counter(replies.mapped("thread_id").ids) == dict.fromkeys(thread_ids, 1)
        assert set(replies.mapped("body")) == {reply_text(PROMPT, TOKENS)}
        for job in env["llm.generation.job"].browse(job_ids):
            attempts = job.attempt_ids.sorted("number")
            pids = [pid_of(a.worker) for a in attempts]
            if job.id not in cut_jobs:
                assert attempts.mapped("outcome") == ["completed"], job.id
                assert pids[0] != cut_pid
                continue
            # Taken back from the cut-off host within about a lease, run again by another.
            assert attempts.mapped("outcome") == ["lost", "completed"], job.id
            assert pids[0] == cut_pid and pids[1] != cut_pid, pids
            taken_back = (attempts[0].write_date - cut_at).total_seconds()
            assert taken_back < LEASE + MAINTENANCE + 2, (job.id, taken_back)
            # The stale attempt logged nothing after the takeover.
            log = env["llm.generation.job.chunk"].search([("job_id", "=", job.id)])
            restart = log.filtered(lambda c: c.kind == "restart")
            assert restart.attempt == 2
            assert max(log.filtered(lambda c: c.attempt == 1).mapped("seq")) < restart.seq
        stale_now = env["llm.generation.job.chunk"].search_count(
            [("job_id", "in", cut_jobs), ("attempt", "=", 1)]
        )
        assert stale_now == stale_pieces
    for process in processes.values():  # the cut cost no worker a traceback or an error
        log = process.log.read_text()
        assert "Traceback" not in log and " ERROR " not in log, log
