"""Claiming and running ticks (one run per tick, missed ticks run once, failures recorded and
rolled back), running a cron by name, and the in-process scheduler, on SQLite and PostgreSQL."""

import datetime as dt
import itertools
import threading
import time

import pytest
from click.testing import CliRunner

from core import RegistryError
from core.cli import main
from core.cron import CronScheduler, load_cron_file, run_due_tick, run_now, sync_rows
from core.cron.ticks import next_call

from .conftest import TEST_ADDONS, TICKING_CRONS

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def cron_file(tmp_path):
    path = tmp_path / "cron.yaml"
    path.write_text(TICKING_CRONS)
    return path


@pytest.fixture
def ids(cron_registry, cron_file):
    return sync_rows(cron_registry, load_cron_file(cron_registry, cron_file))


def set_nextcall(registry, cron_id, nextcall):
    with registry.environment() as env:
        env["ir.cron"].browse(cron_id).nextcall = nextcall


def read(registry, model, domain=(), fields=None):
    with registry.environment(readonly=True) as env:
        return env[model].search(list(domain)).read(fields)


def test_next_call_skips_missed_ticks():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert next_call(start, SECOND, start - SECOND) == start + SECOND  # early: still moves on
    assert next_call(start, SECOND, start) == start + SECOND
    assert next_call(start, SECOND, start + SECOND * 299.5) == start + SECOND * 300


def test_a_missed_tick_runs_once(cron_registry, ids):
    # Ticks a minute apart, so that the next one cannot fall due while the test runs.
    with cron_registry.environment() as env:
        env["ir.cron"].browse(ids["ticker"]).interval_type = "minutes"
    scheduled = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    set_nextcall(cron_registry, ids["ticker"], scheduled)
    assert run_due_tick(cron_registry, ids["ticker"]).ok
    assert run_due_tick(cron_registry, ids["ticker"]) is None  # not due any more
    [tick] = read(cron_registry, "test.cron.tick")
    assert tick["scheduled_at"] == scheduled and tick["cron_id"] == ids["ticker"]
    [row] = read(cron_registry, "ir.cron", [("id", "=", ids["ticker"])])
    now, minute = dt.datetime.now(dt.UTC), 60 * SECOND
    assert now < row["nextcall"] <= now + minute  # on the tick lattice, not 5 ticks behind
    assert (row["nextcall"] - scheduled) % minute == dt.timedelta(0)
    assert row["lastcall"] > scheduled and row["last_success_at"] and row["failure_count"] == 0


def test_a_tick_not_due_does_not_run(cron_registry, ids):
    set_nextcall(cron_registry, ids["ticker"], dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    assert run_due_tick(cron_registry, ids["ticker"]) is None
    assert not read(cron_registry, "test.cron.tick")


def test_failures_are_recorded_and_rolled_back_and_a_success_resets_them(cron_registry, ids):
    for _ in range(2):
        set_nextcall(cron_registry, ids["failing"], dt.datetime.now(dt.UTC))
        outcome = run_due_tick(cron_registry, ids["failing"])
        assert not outcome.ok and outcome.error == "ValueError: boom"
    [row] = read(cron_registry, "ir.cron", [("id", "=", ids["failing"])])
    assert row["failure_count"] == 2 and row["last_error"] == "ValueError: boom"
    assert not row["last_success_at"]
    assert not read(cron_registry, "test.cron.tick")  # the failing tick's write was undone
    with cron_registry.environment() as env:
        env["ir.cron"].browse(ids["failing"]).method = "record_tick"
    set_nextcall(cron_registry, ids["failing"], dt.datetime.now(dt.UTC))
    assert run_due_tick(cron_registry, ids["failing"]).ok
    [row] = read(cron_registry, "ir.cron", [("id", "=", ids["failing"])])
    assert row["failure_count"] == 0 and not row["last_error"] and row["last_success_at"]


def test_the_tick_runs_as_the_crons_user(cron_registry, ids):
    with cron_registry.environment() as env:
        user = env["res.users"].create({"name": "Op", "login": "op"})
        env["ir.cron"].browse(ids["ticker"]).user_id = user
    assert run_due_tick(cron_registry, ids["ticker"]).ok
    [tick] = read(cron_registry, "test.cron.tick")
    assert tick["uid"] == user.id


def test_concurrent_claims_run_a_tick_once(cron_registry, ids):
    with cron_registry.environment() as env:
        env["ir.cron"].browse(ids["ticker"]).args = {"seconds": 0.5}  # a slow tick
    barrier = threading.Barrier(4)
    outcomes = []

    def claim():
        barrier.wait()
        outcomes.append(run_due_tick(cron_registry, ids["ticker"]))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(o is not None for o in outcomes) == 1
    assert len(read(cron_registry, "test.cron.tick")) == 1


def test_run_now_by_name(cron_registry, ids):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    set_nextcall(cron_registry, ids["ticker"], later)
    assert run_now(cron_registry, "ticker").ok
    failed = run_now(cron_registry, "failing")
    assert not failed.ok and failed.error == "ValueError: boom"
    [ticker] = read(cron_registry, "ir.cron", [("id", "=", ids["ticker"])])
    assert ticker["nextcall"] == later and ticker["lastcall"] and ticker["last_success_at"]
    assert read(cron_registry, "ir.cron", [("name", "=", "failing")])[0]["failure_count"] == 1
    with pytest.raises(RegistryError, match="No scheduled action named 'nope'"):
        run_now(cron_registry, "nope")


def test_cli_cron_run_and_list(cron_registry, cron_file):
    base = ["--db-url", cron_registry.db_url, "--addons-path", str(TEST_ADDONS), "cron"]
    runner = CliRunner()
    result = runner.invoke(main, [*base, "run", "--cron-file", str(cron_file), "ticker"])
    assert result.exit_code == 0, result.output
    assert "ticker: done in" in result.output
    result = runner.invoke(main, [*base, "run", "--cron-file", str(cron_file), "failing"])
    assert result.exit_code == 1 and "failing failed after" in result.output
    assert "ValueError: boom" in result.output
    result = runner.invoke(main, [*base, "list"])
    assert result.exit_code == 0, result.output
    assert "every 1 seconds, runs test.cron.tick.fail as user 1" in result.output
    assert "failures 1" in result.output and "last error: ValueError: boom" in result.output
    result = runner.invoke(main, [*base, "run", "--cron-file", str(cron_file) + ".x", "ticker"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_scheduler_runs_every_tick_and_survives_failures(cron_registry, cron_file):
    scheduler = CronScheduler(cron_registry, load_cron_file(cron_registry, cron_file))
    scheduler.start()
    try:
        time.sleep(3.5)
    finally:
        scheduler.stop(timeout=5)
    ticks = read(cron_registry, "test.cron.tick", fields=["scheduled_at", "create_date"])
    scheduled = [t["scheduled_at"] for t in ticks]
    assert len(scheduled) >= 3
    assert all(later - earlier == SECOND for earlier, later in itertools.pairwise(scheduled))
    assert all(t["create_date"] - t["scheduled_at"] < dt.timedelta(seconds=0.5) for t in ticks)
    [failing] = read(cron_registry, "ir.cron", [("name", "=", "failing")])
    assert failing["failure_count"] >= 3 and failing["last_error"] == "ValueError: boom"
    time.sleep(1.2)
    assert len(read(cron_registry, "test.cron.tick")) == len(ticks)  # stopped


def test_stop_finishes_the_tick_in_flight(cron_registry, tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(
        "- {name: slow, model: test.cron.tick, method: record_tick, interval: 1 hour,"
        " args: {seconds: 1.5}}\n"
    )
    scheduler = CronScheduler(cron_registry, load_cron_file(cron_registry, path))
    scheduler.start()
    time.sleep(0.5)  # the first tick is due at once: it is running now
    started = time.monotonic()
    scheduler.stop(timeout=10)
    assert time.monotonic() - started > 0.5  # it waited for the tick
    assert len(read(cron_registry, "test.cron.tick")) == 1  # committed
    [row] = read(cron_registry, "ir.cron", [("name", "=", "slow")])
    assert row["last_success_at"] and row["last_duration"] >= 1.5
