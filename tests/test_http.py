"""core/http against a real server: an addon's controllers are mounted, an unexpected error is
a 500 with a reference and no trace or secret (the traceback goes to the log), the database
away is a 503 to retry, and a controller package without a router is a clear RegistryError."""

from __future__ import annotations

import logging

import httpx
import pytest

from core import RegistryError
from core.http import create_app
from core.testing import served

from .addon_factory import write_addon

CONTROLLERS = """
from fastapi import APIRouter

from core import DatabaseUnavailable, UserError
from core.http import CurrentUser

router = APIRouter(prefix="/api/probe")


@router.get("/hello")
def hello(user: CurrentUser) -> dict:
    with user.environment(readonly=True) as env:
        return {"login": env.user.login}


@router.get("/crash")
def crash(user: CurrentUser) -> dict:
    raise RuntimeError("internal detail sk-probe-secret-77")


@router.get("/away")
def away(user: CurrentUser) -> dict:
    raise DatabaseUnavailable("connection refused")


@router.get("/refused")
def refused(user: CurrentUser) -> dict:
    raise UserError("Not now: the probe is busy.")
"""


@pytest.fixture
def probe(make_registry, tmp_path):
    name = write_addon(tmp_path, "probe", files={"controllers/__init__.py": CONTROLLERS})
    registry = make_registry(addons_path=[tmp_path], addons=[name])
    with registry.environment() as env:
        user = env["res.users"].create(
            {"login": "pat", "name": "Pat", "groups_id": [env.ref("base.group_user").id]}
        )
        _record, token = env["res.users.apikey"].with_user(user).generate("probe")
    with served(create_app(registry)) as url:
        yield httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})


def test_an_addons_routes_run_as_the_authenticated_user(probe):
    assert probe.get("/api/probe/hello").json() == {"login": "pat"}
    assert "/api/probe/hello" in probe.get("/openapi.json").json()["paths"]


def test_errors_are_json_with_the_right_status_and_no_trace(probe, caplog):
    with caplog.at_level(logging.ERROR, logger="core.http.errors"):
        crash = probe.get("/api/probe/crash")
    assert crash.status_code == 500
    detail = crash.json()["detail"]
    assert detail.startswith("Internal error; the server's log has the details (reference ")
    assert "sk-probe" not in crash.text and "Traceback" not in crash.text
    reference = detail.rsplit(" ", 1)[1].rstrip(").")
    [record] = [r for r in caplog.records if reference in r.getMessage()]
    assert "sk-probe-secret-77" in str(record.exc_info[1])  # for the operator, in the log
    away = probe.get("/api/probe/away")
    assert away.status_code == 503 and away.headers["Retry-After"] == "1"
    assert "Try again shortly" in away.json()["detail"]
    refused = probe.get("/api/probe/refused")
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Not now: the probe is busy."}
    assert probe.get("/api/probe/nowhere").status_code == 404


def test_a_controllers_package_without_a_router_is_a_clear_error(make_registry, tmp_path):
    name = write_addon(tmp_path, "norouter", files={"controllers/__init__.py": "routes = []\n"})
    registry = make_registry(addons_path=[tmp_path], addons=[name])
    with pytest.raises(RegistryError, match=r"controllers package must expose `router`"):
        create_app(registry)
