"""Fixtures of the page tests: the real app served on loopback (the dashboard and the API,
with a provider on the OpenAI simulator), users who log in through the login form, httpx
clients with their session, and headless Chromium (Debian's, driven by Playwright) with a
logged-in page per user.

``site``: the served app and its data (``site.queue_job("alice", "hi")`` queues a job of
Alice's); ``web("alice")``: an httpx client logged in as Alice (``.csrf`` is her session's
CSRF token); ``browser``: one Chromium per test session; ``page_as("maya")``: a new browser
page logged in as Maya through the form. Jobs run when the test also takes ``runner`` (an
in-process job runner, as ``llmjobs serve --with-worker`` runs one).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from addons.llm_generation_job.tests.conftest import (  # noqa: F401  (fixtures)
    API_KEY,
    _shared_simulators,
    make_simulator,
    openai_server,
    runner,
    users,
)
from core.http import create_app
from core.redaction import forms
from core.testing import served

PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "manager": "maya-password"}
LOGINS = {"alice": "alice", "bob": "bob", "manager": "maya"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def registry(make_registry):
    return make_registry(addons=["llm_dashboard"])


@dataclass
class Site:
    """The app on a real server, and what the tests made in it."""

    url: str
    registry: object
    users: dict[str, int]
    provider_id: int
    model_id: int
    queue_id: int
    pages: list[str] = field(default_factory=list)  # every page and fragment answered

    def thread(self, user: str, name: str = "Chat") -> int:
        with self.registry.environment() as env:
            thread = (
                env["llm.thread"]
                .with_user(self.users[user])
                .create({"name": name, "provider_id": self.provider_id, "model_id": self.model_id})
            )
            return thread.id

    def queue_job(self, user: str, text: str = "Hello", thread_id: int | None = None) -> int:
        """A job of ``user``'s for a reply to ``text``, queued as they queue it (a thread of
        their own per job: a thread generates one reply at a time)."""
        thread_id = thread_id or self.thread(user, f"{user}: {text[:20]}")
        with self.registry.environment(user=self.users[user]) as env:
            return env["llm.thread"].browse(thread_id)._queue_generation(text, {}).id

    def job(self, job_id: int) -> dict:
        with self.registry.environment(readonly=True) as env:
            job = env["llm.generation.job"].browse(job_id)
            return {
                "state": job.state,
                "attempts": len(job.attempt_ids),
                "reply": job.output_message_id.body or "",
            }

    def wait_job(self, job_id: int, *states: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while (found := self.job(job_id))["state"] not in states:
            assert time.monotonic() < deadline, f"job {job_id} is {found['state']}, not {states}"
            time.sleep(0.05)
        return found

    def pause(self, paused: bool = True) -> None:
        with self.registry.environment() as env:
            queue = env["llm.generation.queue"].browse(self.queue_id)
            if paused:
                queue.action_disable()
            else:
                queue.action_enable()


@pytest.fixture
def site(registry, users, openai_server):  # noqa: F811  (the imported fixtures)
    """The app served on loopback, users with passwords, a provider on the simulator (its API
    key ``API_KEY``) with a model and a queue. After the test, no page answered carried the
    key."""
    with registry.environment() as env:
        for name, uid in users.items():
            env["res.users"].browse(uid).set_password(PASSWORDS[name])
        provider = env["llm.provider"].create(
            {"name": "sim", "service": "openai", "api_base": openai_server.url, "api_key": API_KEY}
        )
        model = env["llm.model"].create(
            {"name": "sim-model", "provider_id": provider.id, "default": True}
        )
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        ids = (provider.id, model.id, queue.id)
    with served(create_app(registry)) as url:
        found = Site(url, registry, users, *ids)
        yield found
    for text in found.pages:
        for form in forms(API_KEY):
            assert form not in text, "a provider's API key is in a page"


def csrf_of(html: str) -> str:
    match = _CSRF_FIELD.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


class WebClient(httpx.Client):
    csrf: str = ""


@pytest.fixture
def web(site):
    """``web(user)``: an httpx client that logged in through the login form (None: not
    logged in); every page it gets is checked for the API key after the test."""
    clients: list[httpx.Client] = []

    def record(response: httpx.Response) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
            site.pages.append(response.text)

    def make(user: str | None) -> WebClient:
        client = WebClient(base_url=site.url, timeout=30, event_hooks={"response": [record]})
        clients.append(client)
        if user is not None:
            form = client.get("/web/login")
            answer = client.post(
                "/web/login",
                data={
                    "login": LOGINS[user],
                    "password": PASSWORDS[user],
                    "next": "/web/",
                    "csrf_token": csrf_of(form.text),
                },
            )
            assert answer.status_code == 303, answer.text
            client.csrf = csrf_of(client.get("/web/").text)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (the system's: no browser download), for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


def log_in(page, user: str) -> None:
    """Log in through the form, as a person does."""
    page.goto("/web/login")
    page.fill("input[name=login]", LOGINS[user])
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url("**/web/")


@pytest.fixture
def page_as(browser, site):
    """``page_as(user)``: a page of a new browser context, logged in as ``user``; the HTML of
    every page and fragment it loads is checked for the API key after the test."""
    contexts = []

    def record(route) -> None:
        if "/events" in route.request.url:  # streams pass as they are
            route.continue_()
            return
        response = route.fetch(max_redirects=0)
        if "text/html" in response.headers.get("content-type", ""):
            site.pages.append(response.text())
        route.fulfill(response=response)

    def make(user: str):
        context = browser.new_context(base_url=site.url, viewport={"width": 1360, "height": 900})
        context.set_default_timeout(15_000)
        context.route("**/web/**", record)
        contexts.append(context)
        page = context.new_page()
        log_in(page, user)
        return page

    yield make
    for context in contexts:
        context.unroute_all(behavior="wait")  # a page still loading is recorded first
        context.close()


@pytest.fixture
def alice_page(page_as):
    return page_as("alice")


@pytest.fixture
def maya_page(page_as):
    return page_as("manager")


def screenshot(page, name: str) -> Path:
    """Save the page (whole) as ``test-artifacts/<name>.png`` at the project's root."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
