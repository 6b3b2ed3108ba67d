"""Fixtures of the llm_thread tests: loopback provider simulators.

``openai_server``, ``anthropic_server`` and ``ollama_server`` are default simulators shared
by the session (starting and stopping a server costs ~0.2 s), handed to each test with no
queued faults and zeroed stats; per-request behaviour goes in ``[sim:...]`` directives or
``push_fault``. ``make_simulator`` starts a private one with other settings (an API key,
slower replies), stopped after the test.
"""

from __future__ import annotations

import pytest

from addons.llm_thread.simulator import SimulatorServer


@pytest.fixture
def make_simulator():
    """Start simulators: ``make_simulator("anthropic", api_key="k", token_delay=0.01)``."""
    servers: list[SimulatorServer] = []

    def make(protocol: str = "openai", **settings) -> SimulatorServer:
        server = SimulatorServer(protocol, **settings).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def _shared_simulators():
    servers: dict[str, SimulatorServer] = {}
    yield servers
    for server in servers.values():
        server.stop()


def _shared_simulator(servers: dict[str, SimulatorServer], protocol: str):
    server = servers.get(protocol)
    if server is None:
        server = servers[protocol] = SimulatorServer(protocol).start()
    server.clear_faults()
    server.reset_stats()
    yield server
    try:
        server.wait_idle(timeout=2)
    except TimeoutError as error:
        servers.pop(protocol).stop()  # the next test gets a fresh one
        pytest.fail(f"The test left streams open on the {protocol} simulator: {error}")


@pytest.fixture
def openai_server(_shared_simulators):
    yield from _shared_simulator(_shared_simulators, "openai")


@pytest.fixture
def anthropic_server(_shared_simulators):
    yield from _shared_simulator(_shared_simulators, "anthropic")


@pytest.fixture
def ollama_server(_shared_simulators):
    yield from _shared_simulator(_shared_simulators, "ollama")


# -- models on the test database -------------------------------------------------------------
@pytest.fixture
def registry(make_registry):
    """The llm_thread addon on the test database (SQLite and PostgreSQL)."""
    return make_registry(addons=["llm_thread"])


@pytest.fixture
def make_thread(registry):
    """``make_thread(server, **thread_values)``: a provider pointed at the simulator (API key
    ``sk-secret-123`` unless given), its default model ``sim-model`` and a thread; returns
    the thread's id."""

    def make(server, api_key="sk-secret-123", **thread_values) -> int:
        with registry.environment() as env:
            provider = env["llm.provider"].create(
                {
                    "name": f"sim-{server.protocol}",
                    "service": server.protocol,
                    "api_base": server.url,
                    "api_key": api_key,
                }
            )
            model = env["llm.model"].create(
                {"name": "sim-model", "provider_id": provider.id, "default": True}
            )
            values = {"name": "Chat", "provider_id": provider.id, "model_id": model.id}
            return env["llm.thread"].create({**values, **thread_values}).id

    return make
