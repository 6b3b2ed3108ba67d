"""Fixtures for the core tests: registries over the test addons in tests/addons."""

from __future__ import annotations

from pathlib import Path

import pytest

TEST_ADDONS = Path(__file__).parent / "addons"
# A cron ticking every second and one failing every second (test_cron_addon).
TICKING_CRONS = """\
- name: ticker
  model: test.cron.tick
  method: record_tick
  interval: 1 second
- name: failing
  model: test.cron.tick
  method: fail
  interval: 1 second
"""


@pytest.fixture
def registry(make_registry):
    """A registry with the ORM test models, on a fresh database (SQLite and PostgreSQL)."""
    return make_registry(addons_path=[TEST_ADDONS], addons=["test_orm"])


@pytest.fixture
def cron_registry(make_registry):
    """A registry with test_cron_addon (test.cron.tick), on a fresh database."""
    return make_registry(addons_path=[TEST_ADDONS], addons=["test_cron_addon"])
