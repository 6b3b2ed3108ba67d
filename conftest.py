"""Fixtures shared by every test: a fresh database per test on SQLite and on PostgreSQL; and
the property tests' hypothesis profile (reproducible: the same examples every run, nothing
kept between runs, no deadline on a shared machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from core import Registry
from core.testing import PG_URL_VARIABLE, database_url, postgres_base_url, postgres_required

settings.register_profile(
    "llmjobs",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("llmjobs")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _database(backend: str, folder: Path):
    if backend == "postgresql" and postgres_base_url() is None:
        message = (
            f"PostgreSQL tests need {PG_URL_VARIABLE} (e.g. postgresql://user:pw@127.0.0.1/db); "
            ".ci/run starts a server and sets it"
        )
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    return database_url(backend, folder)


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A URL of an empty database, once per backend."""
    with _database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=["postgresql"])
def pg_url(request, tmp_path):
    """A URL of an empty PostgreSQL database (for tests of multi-machine behaviour)."""
    with _database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def make_registry(db_url):
    """Build registries on the test database; they are closed after the test."""
    registries: list[Registry] = []

    def make(addons_path=None, addons=None, url=None) -> Registry:
        """``addons_path=None``: the project's addons/ folder."""
        paths = None if addons_path is None else list(addons_path)
        registry = Registry(url or db_url, addons_path=paths, addons=addons)
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        registry.close()


@pytest.fixture
def env(registry):
    """A superuser environment on the test directory's ``registry`` fixture; its transaction
    is rolled back after the test."""
    from core import Environment

    cr = registry.cursor()
    yield Environment(cr)
    cr.close()
