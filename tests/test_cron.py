"""Scheduled actions: cron.yaml validation, claiming ticks, recording failures, and three
worker processes running each tick of a 1-second cron exactly once."""

import datetime as dt
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import Registry, RegistryError
from core.cron import load_entries, run_due, run_once, sync_rows

from .conftest import TEST_ADDONS

GOOD = """
- name: ticker
  model: test.cron.tick
  method: record_tick
  interval: 1 second
- name: failing
  model: test.cron.tick
  method: fail
  interval: 2 seconds
"""


@pytest.fixture
def cron_registry(make_registry):
    return make_registry(addons_path=[TEST_ADDONS], addons=["test_cron_addon"])


def write(tmp_path, text) -> Path:
    path = tmp_path / "cron.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("name: x", "must be a list"),
    ("- [1, 2]", "line 1: each scheduled action must be a mapping"),
    ("- {name: a, model: test.cron.tick, method: fail, interval: 1 day, colour: red}",
     "Cron 'a' .*line 1.*unknown key\\(s\\) colour"),
    ("- {name: a, model: test.cron.tick, interval: 1 day}", "line 1\\): missing method"),
    ("- {name: a, model: test.cron.tick, method: fail, interval: 0 seconds}",
     "interval '0 seconds' must be a positive"),
    ("- {name: a, model: test.cron.tick, method: fail, interval: 2 weeks}",
     "interval '2 weeks'"),
    ("- {name: a, model: test.cron.tick, method: nope, interval: 1 day}",
     "line 1.*has no method 'nope'"),
    ("- {name: a, model: test.cron.tick, method: fail, interval: 1 day}\n"
     "- {name: a, model: test.cron.tick, method: fail, interval: 1 day}",
     "Cron 'a' .*line 2.* declared twice"),
    ("- {name: a, model: test.cron.tick, method: fail, interval: 1 day, args: [1]}",
     "args must be a mapping"),
    ("- {name: a", "not valid YAML"),
])
def test_bad_cron_files_are_clear_errors(cron_registry, tmp_path, text, message):
    with pytest.raises(RegistryError, match=message):
        load_entries(write(tmp_path, text), cron_registry)


def test_unknown_user_is_an_error(cron_registry, tmp_path):
    entries = load_entries(write(tmp_path, GOOD.replace(
        "interval: 1 second", "interval: 1 second\n  user: ghost")), cron_registry)
    with pytest.raises(RegistryError, match="no user with login 'ghost'"):
        sync_rows(cron_registry, entries)


def test_entries_of_models_not_loaded_are_skipped(cron_registry, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="core.cron")
    text = GOOD + "- {name: other, model: llm.thread, method: x, interval: 1 day}\n"
    entries = load_entries(write(tmp_path, text), cron_registry)
    assert [e.name for e in entries] == ["ticker", "failing"]
    assert "Cron 'other'" in caplog.text and "not loaded" in caplog.text


def test_a_missed_tick_runs_once_and_failures_are_recorded(cron_registry, tmp_path):
    sync_rows(cron_registry, load_entries(write(tmp_path, GOOD), cron_registry))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    with cron_registry.environment() as env:
        env["ir.cron"].search([]).write({"nextcall": long_ago})
    assert run_due(cron_registry) == 2
    assert run_due(cron_registry) == 0  # nothing due any more
    with cron_registry.environment() as env:
        assert env["test.cron.tick"].search_count([]) == 1  # 300 missed ticks: one run
        ticker = env["ir.cron"].search([("name", "=", "ticker")])
        failing = env["ir.cron"].search([("name", "=", "failing")])
        assert ticker.nextcall > dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        assert ticker.last_success_at and ticker.failure_count == 0
        assert failing.failure_count == 1 and "ValueError: boom" in failing.last_error
        assert env["test.cron.tick"].search_count([("label", "=", "boom")]) == 0


def test_run_once_by_name(cron_registry, tmp_path):
    sync_rows(cron_registry, load_entries(write(tmp_path, GOOD), cron_registry))
    assert run_once(cron_registry, "ticker").ok
    failed = run_once(cron_registry, "failing")
    assert not failed.ok and failed.error == "ValueError: boom"
    with cron_registry.environment() as env:
        assert env["ir.cron"].search([("name", "=", "failing")]).failure_count == 1
    with pytest.raises(RegistryError, match="No scheduled action named 'nope'"):
        run_once(cron_registry, "nope")


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_run_each_tick_once(pg_url, tmp_path):
    registry = Registry(pg_url, addons_path=[TEST_ADDONS], addons=["test_cron_addon"])
    path = write(tmp_path, GOOD)
    env = {**os.environ, "LLMJOBS_DB_URL": pg_url, "LLMJOBS_CRON_FILE": str(path),
           "LLMJOBS_ADDONS_PATH": str(TEST_ADDONS)}
    llmjobs = shutil.which("llmjobs", path=str(Path(sys.executable).parent))
    workers = [subprocess.Popen([llmjobs, "worker"], env=env) for _ in range(3)]
    try:
        time.sleep(9)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(timeout=20) for worker in workers] == [0, 0, 0]
    with registry.environment(readonly=True) as env:
        ticks = env["test.cron.tick"].search([], order="id")
        times = ticks.mapped("create_date")
        failing = env["ir.cron"].search([("name", "=", "failing")])
        assert failing.failure_count >= 2 and "boom" in failing.last_error
        pids = set(ticks.mapped("pid"))
    registry.close()
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert len(times) >= 6
    assert min(gaps) > 0.5, "a tick ran twice"
    assert max(gaps) < 1.8, "a tick was skipped"
    assert pids  # which worker ran a tick is up to the race between them
