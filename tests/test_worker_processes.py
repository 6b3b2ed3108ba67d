"""Real ``llmjobs worker`` processes: three workers on PostgreSQL run each tick of a 1-second
cron exactly once with no gap while a failing cron is recorded; SIGTERM stops a worker cleanly
(its addon services too); a bad cron file stops the start with a clear error."""

import datetime as dt
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import Registry

from .conftest import TEST_ADDONS, TICKING_CRONS

pytestmark = pytest.mark.slow

LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent))


def worker_env(db_url: str, cron_file: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LLMJOBS_DB_URL": db_url,
        "LLMJOBS_ADDONS_PATH": str(TEST_ADDONS),
        "LLMJOBS_CRON_FILE": str(cron_file),
        **extra,
    }


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stop(workers: list[subprocess.Popen], timeout: float = 10) -> list[int]:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    try:
        return [worker.wait(timeout=timeout) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def tick_count(registry: Registry, label: str = "tick") -> int:
    with registry.environment(readonly=True) as env:
        return env["test.cron.tick"].search_count([("label", "=", label)])


@pytest.mark.postgres
def test_three_workers_run_each_tick_once(pg_url, tmp_path):
    registry = Registry(pg_url, addons_path=[TEST_ADDONS], addons=["test_cron_addon"])
    cron_file = tmp_path / "cron.yaml"
    cron_file.write_text(TICKING_CRONS)
    env = worker_env(pg_url, cron_file)
    workers = [subprocess.Popen([LLMJOBS, "worker"], env=env) for _ in range(3)]
    try:
        wait_for(lambda: tick_count(registry) > 0, 30, "the first tick")
        time.sleep(10)
    finally:
        assert stop(workers) == [0, 0, 0]
    with registry.environment(readonly=True) as env:
        ticks = env["test.cron.tick"].search([]).read(["scheduled_at", "create_date", "label"])
        [failing] = env["ir.cron"].search([("name", "=", "failing")]).read()
    registry.close()
    assert not [t for t in ticks if t["label"] == "boom"], "a failed tick was not rolled back"
    scheduled = [t["scheduled_at"] for t in ticks]
    assert len(scheduled) >= 9
    assert len(set(scheduled)) == len(scheduled), "a tick ran twice"
    gaps = {later - earlier for earlier, later in itertools.pairwise(scheduled)}
    assert gaps == {dt.timedelta(seconds=1)}, f"a tick was skipped: {gaps}"
    lateness = max(t["create_date"] - t["scheduled_at"] for t in ticks)
    assert lateness < dt.timedelta(seconds=0.5)
    assert failing["failure_count"] >= 9 and failing["last_error"] == "ValueError: boom"


def test_sigterm_stops_a_worker_and_its_services(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'worker.db'}"
    registry = Registry(db_url, addons_path=[TEST_ADDONS], addons=["test_cron_addon"])
    cron_file = tmp_path / "cron.yaml"
    cron_file.write_text(TICKING_CRONS)
    notes = tmp_path / "service.log"
    env = worker_env(db_url, cron_file, LLMJOBS_TEST_SERVICE_LOG=str(notes))
    worker = subprocess.Popen([LLMJOBS, "worker"], env=env)
    try:
        wait_for(lambda: tick_count(registry) >= 2, 30, "two ticks")
    finally:
        started = time.monotonic()
        assert stop([worker]) == [0]
    assert time.monotonic() - started < 5
    assert notes.read_text().split("\n") == [
        f"{worker.pid} started",
        f"{worker.pid} stopped 20.0",
        "",
    ]
    registry.close()


def test_a_bad_cron_file_stops_the_start(tmp_path):
    cron_file = tmp_path / "cron.yaml"
    cron_file.write_text(TICKING_CRONS.replace("method: fail", "method: missing"))
    env = worker_env(f"sqlite:///{tmp_path / 'bad.db'}", cron_file)
    result = subprocess.run(
        [LLMJOBS, "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"Error: Cron 'failing' ({cron_file} line 5): model 'test.cron.tick' has no method " in (
        result.stderr
    )
