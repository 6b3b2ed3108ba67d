"""The dashboard in a real browser (headless Chromium, Debian's, driven by Playwright), on the
real app and a real job runner with the OpenAI simulator, as its users meet it: they log in
through the form, watch a reply stream into a job's page, retry, bulk-cancel, change a queue,
and an ordinary user sees only their own jobs and no manager page. On SQLite only: the data
layer is covered on both databases elsewhere. Screenshots of the overview and a job page go
to test-artifacts/."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from core.testing import database_url

from .conftest import screenshot

pytestmark = pytest.mark.browser
SLOW_REPLY = "[sim:tokens=40 token_delay=0.06]"


@pytest.fixture
def db_url(tmp_path):
    with database_url("sqlite", tmp_path) as url:
        yield url


RECORD_LENGTHS = """() => {
    window.stayed = true;  // gone if the page reloads
    window.lengths = [];
    const reply = document.getElementById("reply");
    new MutationObserver(() => window.lengths.push(reply.textContent.length))
        .observe(reply, {childList: true, characterData: true, subtree: true});
}"""


def test_a_queued_job_streams_its_reply_into_its_page_until_completed(
    site, runner, alice_page, page_as
):
    site.pause()
    job_id = site.queue_job("alice", f"{SLOW_REPLY} Tell me a story")
    page = alice_page
    page.goto(f"/web/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("queued")
    page.evaluate(RECORD_LENGTHS)

    site.pause(False)  # a worker takes it now
    expect(page.locator("#job-state")).to_have_text("running")
    expect(page.locator("#job-state")).to_have_text("completed", timeout=20_000)

    stored = site.job(job_id)
    assert stored["state"] == "completed" and stored["reply"]
    expect(page.locator("#reply")).to_have_text(stored["reply"])
    assert page.evaluate("window.stayed") is True, "the page was reloaded"
    lengths = page.evaluate("window.lengths")
    growing = {length for length in lengths if 0 < length < len(stored["reply"])}
    assert len(growing) >= 3, f"the reply did not grow piece by piece: {lengths}"
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(1)
    expect(timeline.first).to_contain_text("completed")
    expect(timeline.first).to_contain_text("tokens/s")
    screenshot(page, "job-page")

    maya = page_as("manager")
    maya.goto("/web/")
    expect(maya.locator(".queue-card")).to_have_count(1)
    expect(maya.locator(".stat.completed .stat-value")).to_have_text("1")
    screenshot(maya, "overview")


def test_a_failed_job_is_retried_from_its_page(site, runner, openai_server, alice_page):
    openai_server.push_fault(status=400, message="Unsupported parameter: max_tokens")
    job_id = site.queue_job("alice", "Hello")
    assert site.wait_job(job_id, "failed")["attempts"] == 1
    page = alice_page
    page.goto(f"/web/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator(".job-error")).to_contain_text("Unsupported parameter")

    page.click("form[action$='/retry'] button")
    expect(page.locator("#job-state")).to_have_text("completed", timeout=20_000)
    expect(page.locator("#timeline li")).to_have_count(2)
    expect(page.locator("#timeline li").nth(0)).to_contain_text("failed")
    expect(page.locator("#timeline li").nth(1)).to_contain_text("completed")
    assert site.job(job_id)["state"] == "completed"
    expect(page.locator("#reply")).to_have_text(site.job(job_id)["reply"])


def test_bulk_cancel_by_filter_shows_the_count_first(site, maya_page):
    site.pause()  # they stay queued
    queued = [site.queue_job("alice", f"Question {n}") for n in range(3)]
    page = maya_page
    page.goto("/web/jobs")
    page.check("input[name=state][value=queued]")
    page.click("#filters button[type=submit]")
    expect(page.locator("#job-rows tr[data-job]")).to_have_count(3)

    page.click("text=Cancel all…")
    expect(page.locator("#matched")).to_have_text("3")
    assert {site.job(job_id)["state"] for job_id in queued} == {"queued"}  # not yet
    page.click("form[action='/web/jobs/bulk/filter'] button[type=submit]")
    expect(page.locator("#done")).to_have_text("3")
    assert {site.job(job_id)["state"] for job_id in queued} == {"cancelled"}

    page.click("text=Back to the list")
    expect(page.locator("tr.no-rows")).to_be_visible()  # none queued any more


def test_a_manager_changes_a_queue_limit(site, maya_page):
    page = maya_page
    page.goto("/web/queues")
    card = page.locator(f"#queue-{site.queue_id}")
    expect(card.locator(".limit")).to_have_text("5")
    card.locator("input[name=max_concurrent_jobs]").fill("12")
    card.locator(".queue-form button[type=submit]").click()
    expect(page.locator(f"#queue-{site.queue_id} .limit")).to_have_text("12")
    with site.registry.environment(readonly=True) as env:
        assert env["llm.generation.queue"].browse(site.queue_id).max_concurrent_jobs == 12


def test_an_ordinary_user_sees_only_their_own_jobs_and_no_manager_page(site, alice_page):
    site.pause()
    own = site.queue_job("alice", "Mine")
    others = site.queue_job("bob", "Bob's secret question")
    page = alice_page
    page.goto("/web/jobs")
    expect(page.locator("#job-rows tr[data-job]")).to_have_count(1)
    expect(page.locator(f"#job-{own}")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Bob's secret")

    answer = page.goto(f"/web/jobs/{others}")
    assert answer.status == 404
    expect(page.locator("body")).not_to_contain_text("Bob's secret")

    expect(page.locator("nav >> text=Providers")).to_have_count(0)
    answer = page.goto("/web/providers")
    assert answer.status == 403
    expect(page.locator(".error-detail")).to_contain_text("Only LLM managers")

    page.goto("/web/queues")
    expect(page.locator(f"#queue-{site.queue_id}")).to_be_visible()
    expect(page.locator("form[action^='/web/queues/']")).to_have_count(0)


def test_the_overview_updates_live(site, alice_page):
    site.pause()
    page = alice_page
    page.goto("/web/")
    page.evaluate("window.stayed = true")
    queued = page.locator(".stat.queued .stat-value")
    expect(queued).to_have_text("0")
    site.queue_job("alice", "One")
    site.queue_job("bob", "Two")
    expect(queued).to_have_text("2", timeout=10_000)
    assert page.evaluate("window.stayed") is True, "the page was reloaded"

    # Hidden, the page stops listening; visible again, it listens and catches up.
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    expect(page.locator("#live-state")).to_have_text("○ paused")
    site.queue_job("alice", "Three")
    time.sleep(2.5)  # long enough for an event, had the page still been listening
    expect(queued).to_have_text("2")
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => false});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    expect(queued).to_have_text("3", timeout=10_000)


def test_a_manager_batches_unattended_jobs_and_a_user_watches_hers_complete(
    site, maya_page, alice_page
):
    page = maya_page
    page.goto("/web/queues")
    card = page.locator(f"#queue-{site.queue_id}")
    card.locator("input[name=batch_unattended]").check()
    card.locator("input[name=batch_max_size]").fill("1")
    card.locator(".queue-form button[type=submit]").click()
    expect(page.locator(f"#queue-{site.queue_id} input[name=batch_unattended]")).to_be_checked()
    with site.registry.environment(readonly=True) as env:
        assert env["llm.generation.queue"].browse(site.queue_id).batch_unattended

    thread_id = site.thread("alice", "Overnight summary")
    with site.registry.environment(user=site.users["alice"]) as env:
        job = env["llm.generation.job"].create(
            {"thread_id": thread_id, "interactive": False, "generation_inputs": {"prompt": "Hi"}}
        )
        job.action_queue()
        job_id = job.id
    with site.registry.environment() as env:  # the status cron's round submits it
        env["llm.generation.queue"]._check_job_statuses()
    page.goto("/web/queues")
    expect(page.locator(f"#queue-{site.queue_id} .batch-count")).to_have_text("1 job in 1 batch")
    screenshot(page, "queues-with-a-batch")

    page = alice_page
    page.goto(f"/web/jobs/{job_id}")
    expect(page.locator(".provider-job")).to_contain_text("batch batch_")
    site.wait_job(job_id, "running")
    with site.registry.environment() as env:  # the next round finds it ended and applies it
        deadline = time.monotonic() + 10
        while env["llm.generation.job"].browse(job_id).state == "running":
            assert time.monotonic() < deadline
            env["llm.generation.queue"]._check_job_statuses()
            env["llm.generation.job"].browse(job_id).invalidate_recordset()
    expect(page.locator("#job-state")).to_contain_text("completed")
    expect(page.locator(".provider-job")).to_contain_text("completed · 1 total · 1 completed")
    screenshot(page, "job-in-a-batch")
