"""Fixtures for the generation-job tests: a registry with the addon, a provider and thread,
users, and real ``llmjobs worker`` processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from addons.llm_thread.tests.conftest import (  # noqa: F401  (fixtures)
    _shared_simulators,
    make_simulator,
    openai_server,
)
from core.config import secret_key


@pytest.fixture
def registry(make_registry):
    return make_registry(addons=["llm_generation_job"])


def make_provider(
    env, api_base="http://127.0.0.1:9/v1", name="sim", service="openai", api_key="sk-test"
):
    provider = env["llm.provider"].create(
        {"name": name, "service": service, "api_base": api_base, "api_key": api_key}
    )
    model = env["llm.model"].create(
        {"name": "sim-model", "provider_id": provider.id, "model_use": "chat", "default": True}
    )
    return provider, model


@pytest.fixture
def thread(env):
    provider, model = make_provider(env)
    return env["llm.thread"].create(
        {"name": "Chat", "provider_id": provider.id, "model_id": model.id}
    )


@pytest.fixture
def runner(registry):
    """A job runner working in this process, as `llmjobs worker` runs one."""
    from addons.llm_generation_job.runner import JobRunner

    job_runner = JobRunner(registry, concurrency=4, poll_interval=0.2)
    job_runner.start()
    yield job_runner
    job_runner.stop(timeout=5)


@pytest.fixture
def sim_thread(registry, openai_server):  # noqa: F811  (the imported fixture)
    """A committed thread on a provider served by the OpenAI simulator; returns its id."""
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url)
        thread = env["llm.thread"].create(
            {"name": "Chat", "provider_id": provider.id, "model_id": model.id}
        )
        return thread.id


@pytest.fixture
def users(registry):
    """Ids of two ordinary users (``base.group_user``) and an LLM manager."""
    with registry.environment() as env:
        group = env.ref("base.group_user").id
        manager = env.ref("llm_thread.group_llm_manager").id
        created = env["res.users"].create(
            [
                {"name": "Alice", "login": "alice", "groups_id": [group]},
                {"name": "Bob", "login": "bob", "groups_id": [group]},
                {"name": "Maya", "login": "maya", "groups_id": [manager]},
            ]
        )
        return dict(zip(("alice", "bob", "manager"), created.ids, strict=True))


@pytest.fixture
def start_workers(db_url, tmp_path):
    """``start_workers(count, concurrency=8, lease=None, options=(), **env)`` starts ``llmjobs
    worker`` processes on the test database, each from a folder of its own (as an operator starts
    them, elsewhere than the project); they get SIGTERM after the test and must exit
    cleanly. Their output goes to ``worker.log`` in that folder (``.log`` attribute). They
    find the database they are given and the key file of the home folder, as in production."""
    secret_key()  # the key file exists before the workers look for it
    crons = tmp_path / "no-crons.yaml"
    crons.write_text("[]\n")
    llmjobs = shutil.which("llmjobs", path=str(Path(sys.executable).parent))
    workers: list[subprocess.Popen] = []

    def start(count=1, concurrency=8, lease=None, options=(), prefix=(), **extra):
        """``options``: the main command's own (``-vv`` for debug logging); ``prefix``: a
        command that runs the worker (e.g. ``prlimit --nofile=64:64``)."""
        started = []
        for _ in range(count):
            home = tmp_path / f"worker-{len(workers) + 1}"
            home.mkdir()
            env = {
                **os.environ,
                "LLMJOBS_DB_URL": db_url,
                "LLMJOBS_CRON_FILE": str(crons),
                "LLMJOBS_WORKER_CONCURRENCY": str(concurrency),
                **extra,
            }
            if lease is not None:
                env["LLMJOBS_JOB_LEASE_SECONDS"] = str(lease)
            log = (home / "worker.log").open("wb")
            process = subprocess.Popen(
                [*prefix, llmjobs, *options, "worker"],
                env=env,
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            process.log = home / "worker.log"
            log.close()
            workers.append(process)
            started.append(process)
        return started

    yield start
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
        # -SIGTERM: the signal came while it was still starting, before it listened for it
        # (it had no work to hand back yet).
        assert code in (0, -signal.SIGKILL, -signal.SIGTERM), worker.log.read_text()


def streaming(env, job_ids) -> set[int]:
    """The jobs among ``job_ids`` whose reply has begun to stream (pieces in their log)."""
    chunks = env["llm.generation.job.chunk"].search(
        [("job_id", "in", list(job_ids)), ("kind", "=", "text")]
    )
    return set(chunks.mapped("job_id").ids)


# The API key of every provider the HTTP tests create: the `api` fixture finds it in no
# response and no log line of any of them.
API_KEY = "sk-http-suite-4f1c9e27b8d6"


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@dataclass
class Api:
    """The registry's HTTP API, served on loopback by uvicorn for one test."""

    url: str
    tokens: dict[str, str]  # user name -> an API token of theirs
    responses: list[str] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, user: str | None, **options) -> httpx.Client:
        """An httpx client as ``user`` ('alice', 'bob', 'manager'; None: anonymous)."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=30,
            event_hooks={"response": [self._capture]},
            **options,
        )
        self.clients.append(client)
        return client

    def _capture(self, response: httpx.Response) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
            self.responses.append(f"{response.headers}\n{response.text}")
        else:
            self.responses.append(str(response.headers))


@pytest.fixture
def api(registry, users):
    """The HTTP API on a real server; ``api.client('alice')`` calls it with a token of
    Alice's. After the test, the providers' API key is in no response and no log line."""
    from core.http import create_app
    from core.redaction import forms
    from core.testing import served

    tokens = {}
    with registry.environment() as env:
        for name, uid in users.items():
            tokens[name] = env["res.users.apikey"].with_user(uid).generate("tests")[1]
    captured = _Captured()
    root = logging.getLogger()
    root.addHandler(captured)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with served(create_app(registry)) as url:
            found = Api(url, tokens)
            yield found
            for client in found.clients:
                client.close()
    finally:
        root.removeHandler(captured)
        root.setLevel(level)
    for text in [*found.responses, *captured.texts]:
        for form in forms(API_KEY):
            assert form not in text, "a provider's API key leaked"
