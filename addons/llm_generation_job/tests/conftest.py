"""Fixtures for the generation-job tests: a registry with the addon, and a provider/thread."""

from __future__ import annotations

import pytest

from addons.llm_thread.tests.conftest import (  # noqa: F401  (fixtures)
    _shared_simulators,
    make_simulator,
    openai_server,
)


@pytest.fixture
def registry(make_registry):
    return make_registry(addons=["llm_generation_job"])


def make_provider(env, api_base="http://127.0.0.1:9/v1", name="sim", service="openai"):
    provider = env["llm.provider"].create(
        {"name": name, "service": service, "api_base": api_base, "api_key": "sk-test"})
    model = env["llm.model"].create(
        {"name": "sim-model", "provider_id": provider.id, "model_use": "chat", "default": True})
    return provider, model


@pytest.fixture
def thread(env):
    provider, model = make_provider(env)
    return env["llm.thread"].create(
        {"name": "Chat", "provider_id": provider.id, "model_id": model.id})


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
            {"name": "Chat", "provider_id": provider.id, "model_id": model.id})
        return thread.id
