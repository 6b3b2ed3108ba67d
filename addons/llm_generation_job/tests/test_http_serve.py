"""``llmjobs serve --with-worker`` as an operator runs it: a process of its own, started from
another folder; a user logs in, creates a token, and a script generates a reply through the
queue served by the embedded worker; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from core.config import secret_key

from .conftest import API_KEY

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_an_embedded_worker(registry, db_url, tmp_path, openai_server, users):
    secret_key()  # the key file the server finds, as the workers do
    with registry.environment() as env:
        env["res.users"].browse(users["alice"]).set_password("alice's password")
        provider = env["llm.provider"].create(
            {"name": "sim", "service": "openai", "api_base": openai_server.url, "api_key": API_KEY}
        )
        env["llm.model"].create({"name": "m", "provider_id": provider.id, "default": True})
        env["llm.generation.queue"]._get_or_create_queue(provider.id)
    crons = tmp_path / "no-crons.yaml"
    crons.write_text("[]\n")
    home = tmp_path / "server"
    home.mkdir()
    port = _free_port()
    llmjobs = shutil.which("llmjobs", path=str(Path(sys.executable).parent))
    log = (home / "serve.log").open("wb")
    server = subprocess.Popen(
        [llmjobs, "-vv", "serve", "--port", str(port), "--with-worker"],
        env={**os.environ, "LLMJOBS_DB_URL": db_url, "LLMJOBS_CRON_FILE": str(crons)},
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/openapi.json").raise_for_status()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (home / "serve.log").read_text()
                time.sleep(0.1)
        browser = httpx.Client(base_url=url)
        login = {"login": "alice", "password": "alice's password"}
        csrf = browser.post("/api/session", json=login).json()["csrf_token"]
        made = browser.post("/api/tokens", json={"name": "s"}, headers={"X-CSRF-Token": csrf})
        script = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {made.json()['token']}"}, timeout=30
        )
        thread = script.post("/api/threads", json={"provider_id": provider.id}).json()
        deadline = time.monotonic() + 30  # until the embedded worker has registered
        while not script.get("/api/queues").json()[0]["live_workers"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        generate = f"/api/threads/{thread['id']}/generate"
        with connect_sse(script, "POST", generate, json={"content": "hi"}) as source:
            got = list(source.iter_sse())
        assert got[0].event == "generation_mode" and got[0].json()["mode"] == "queued"
        assert got[-1].event == "done"
        job = script.get(f"/api/jobs/{got[-1].json()['job_id']}").json()
        assert job["state"] == "completed" and job["attempts"][0]["worker"].endswith(
            f":{server.pid}"
        )
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        log.close()
    text = (home / "serve.log").read_text()
    # uvicorn ends a clean shutdown by re-raising the signal it caught (the exit status says
    # "stopped by SIGTERM"), after the embedded worker stopped.
    assert code == -signal.SIGTERM, (code, text[-3000:])
    assert "Application shutdown complete" in text
    assert API_KEY not in text and "Traceback" not in text
