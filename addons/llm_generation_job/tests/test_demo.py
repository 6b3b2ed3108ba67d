"""``llmjobs demo``, the main job (``make run``), run as the user runs it: a process of its own
on a fresh SQLite database, from another folder."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent))


def start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, queue.Queue]:
    env = {**os.environ, "LLMJOBS_HOME": str(tmp_path)}
    env.pop("LLMJOBS_DB_URL", None)  # the embedded default, as `make run` has it
    process = subprocess.Popen(
        [LLMJOBS, "demo", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def wait_for(lines: queue.Queue, seen: list[str], pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matched {pattern!r}; the demo printed:\n" + "\n".join(seen))


def test_demo_once_streams_a_reply_runs_a_batch_and_exits(tmp_path):
    process, lines = start_demo(tmp_path, "--once", "--jobs", "3", "--token-delay", "0")
    seen: list[str] = []
    wait_for(lines, seen, r"^\[done\]$", 60)
    wait_for(lines, seen, r"success rate:\s+100 %", 60)
    assert process.wait(30) == 0
    assert (tmp_path / "llmjobs.db").exists()
    assert any("3 completed" in line or "4 completed" in line for line in seen), seen


@pytest.mark.slow
def test_demo_serves_the_dashboard_streams_a_reply_and_keeps_traffic_flowing(tmp_path):
    process, lines = start_demo(tmp_path, "--port", "0", "--interval", "0.3")
    seen: list[str] = []
    try:
        url = wait_for(lines, seen, r"^Dashboard: (http://\S+)/web/$", 60).group(1)
        login, password = wait_for(lines, seen, r"^Login:\s+(\S+) / (\S+)$", 10).groups()
        wait_for(lines, seen, r"^\[done\]$", 60)
        # The trickle: retried jobs complete, some fail for good.
        wait_for(lines, seen, r"completed in .* \(after 1 retry\)", 60)
        wait_for(lines, seen, r"failed for good: .*maximum context length", 60)
        with httpx.Client(base_url=url, timeout=10) as client:
            answer = client.post("/api/session", json={"login": login, "password": password})
            assert answer.status_code == 200, answer.text
            jobs = client.get("/api/jobs", params={"limit": 500}).json()["items"]
            states = {job["state"] for job in jobs}
            assert {"completed", "failed"} <= states, states
            queue_row = client.get("/api/queues").json()[0]
            assert queue_row["provider_name"] == "demo-simulator"
            assert queue_row["live_workers"] == 1
    finally:
        process.send_signal(signal.SIGTERM)  # as Ctrl-C (SIGINT) does: hand back, then exit
        status = process.wait(60)
    wait_for(lines, seen, r"^Stopping", 5)
    assert status == 0
    assert "Traceback" not in "\n".join(seen)
    assert "sk-demo" not in "\n".join(seen)
