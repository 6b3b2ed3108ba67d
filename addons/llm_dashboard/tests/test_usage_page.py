"""The usage page and a job's cost on its page, on SQLite and PostgreSQL, over plain HTTP (no
JavaScript): an ordinary user sees their own usage only, a manager everyone's, per day and
per user, provider, model or thread (a GET form's ``by``); the job page shows what the job and
each attempt cost, marking estimated tokens. The usage is made by real jobs (a job runner in
this process, the OpenAI simulator); the pages' numbers are checked against the ledger. One
browser test takes screenshots of both pages (test-artifacts/usage-page.png, job-cost.png)."""

from __future__ import annotations

import html
import re

import pytest
from playwright.sync_api import expect

from addons.llm_generation_job.controllers.usage import format_cost

from .conftest import screenshot

PRICES = {"input_price": 3.0, "output_price": 15.0, "cached_input_price": 0.3}


@pytest.fixture
def priced(site):
    """The site's model has prices, and a failed attempt is retried at once."""
    with site.registry.environment() as env:
        env["llm.model"].browse(site.model_id).write(PRICES)
        env["llm.generation.queue"].browse(site.queue_id).write({"retry_delay_minutes": 0})
    return site


def run_jobs(site, plan: dict[str, list[str]]) -> dict[str, list[int]]:
    """Queue each user's prompts (a thread each) and wait until all completed."""
    jobs = {user: [site.queue_job(user, text) for text in texts] for user, texts in plan.items()}
    for ids in jobs.values():
        for job_id in ids:
            site.wait_job(job_id, "completed")
    return jobs


def ledger(site, user: str | None = None) -> list:
    with site.registry.environment(readonly=True) as env:
        domain = [("user_id", "=", site.users[user])] if user else []
        return [
            {
                "user": row.user_id.id,
                "thread": row.thread_id.id,
                "job": row.job_id.id,
                "prompt": row.prompt_tokens,
                "completion": row.completion_tokens,
                "cost": row.cost,
                "estimated": row.estimated,
            }
            for row in env["llm.generation.usage"].search(domain)
        ]


def table_rows(page: str, table_id: str) -> dict[str, dict[str, str]]:
    """The rows of a usage table, by their label (the totals as 'Total'): each numeric
    cell's text by its class."""
    found = re.search(rf'<table class="table usage" id="{table_id}">(.*?)</table>', page, re.S)
    assert found, f"no table {table_id} in the page"
    rows = {}
    for row in re.findall(r"<tr[ >].*?</tr>", found.group(1), re.S)[1:]:  # after the header
        cells = re.findall(r'<td(?: class="([^"]*)")?[^>]*>(.*?)</td>', row, re.S)
        label = _text(cells[0][1])
        rows[label] = {
            kind.removeprefix("num "): _text(content)
            for kind, content in cells[1:]
            if kind.startswith("num ")
        }
    return rows


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def test_the_usage_page_shows_a_user_their_own_and_a_manager_everyones(priced, web, runner):
    site = priced
    run_jobs(site, {"alice": ["One", "Two"], "bob": ["Bob's secret question"]})
    alice = web("alice").get("/web/usage")
    assert alice.status_code == 200
    assert '<a href="/web/usage" class="active">Usage</a>' in alice.text
    assert "Your usage" in alice.text and "Bob" not in alice.text

    mine = ledger(site, "alice")
    by_provider = table_rows(alice.text, "usage-by")  # an ordinary user's default
    assert list(by_provider) == ["sim", "Total"]
    sim = by_provider["sim"]
    assert sim["attempts"] == "2" == by_provider["Total"]["attempts"]
    assert sim["completion"] == str(sum(row["completion"] for row in mine))
    assert sim["prompt"] == str(sum(row["prompt"] for row in mine))
    assert sim["cost"] == format_cost(sum(row["cost"] for row in mine)) != "$0"
    assert sim["estimated"] == "\N{EN DASH}"  # none estimated
    [today, total] = table_rows(alice.text, "usage-daily").values()
    assert today == total and today["attempts"] == "2"
    assert re.search(r'id="total-attempts">2<', alice.text)

    threads = table_rows(web("alice").get("/web/usage?by=thread").text, "usage-by")
    assert sorted(threads) == ["Total", "alice: One", "alice: Two"]

    maya = web("manager").get("/web/usage")
    assert maya.status_code == 200
    assert "Every user\N{RIGHT SINGLE QUOTATION MARK}s usage" in maya.text
    by_user = table_rows(maya.text, "usage-by")  # a manager's default
    everyone = ledger(site)
    assert sorted(by_user) == ["Alice", "Bob", "Total"]
    assert by_user["Alice"]["attempts"] == "2" and by_user["Bob"]["attempts"] == "1"
    assert by_user["Bob"]["cost"] == format_cost(sum(r["cost"] for r in ledger(site, "bob")))
    assert by_user["Total"]["completion"] == str(sum(row["completion"] for row in everyone))
    by_model = table_rows(web("manager").get("/web/usage?by=model").text, "usage-by")
    assert by_model["sim-model (sim)"]["attempts"] == "3"
    assert web("manager").get("/web/usage?by=week").status_code == 422
    assert web(None).get("/web/usage").status_code == 303  # to the login form


def test_a_job_page_shows_what_the_job_and_each_attempt_cost(priced, web, runner, openai_server):
    site = priced
    openai_server.push_fault(cut_after=2)  # the first attempt's stream is cut: estimated
    [job_id] = run_jobs(site, {"alice": ["Tell me"]})["alice"]
    rows = sorted(ledger(site, "alice"), key=lambda row: row["estimated"], reverse=True)
    assert [row["estimated"] for row in rows] == [True, False]
    page = web("alice").get(f"/web/jobs/{job_id}").text

    cost = re.search(r'<dd class="job-cost">(.*?)</dd>', page, re.S)
    assert cost, "no cost on the job page"
    spent = _text(cost.group(1))
    assert spent.startswith(format_cost(sum(row["cost"] for row in rows)) + " · ")
    prompt = sum(row["prompt"] for row in rows)
    completion = sum(row["completion"] for row in rows)
    assert f"{prompt} prompt, {completion} completion tokens estimated" in spent

    attempts = re.findall(r'<dd class="attempt-cost">(.*?)</dd>', page, re.S)
    assert [_text(found) for found in attempts] == [
        f"{format_cost(rows[0]['cost'])} (estimated)",
        format_cost(rows[1]["cost"]),
    ]
    tokens = [_text(found) for found in re.findall(r'<dd class="attempt-tokens">(.*?)</dd>', page)]
    estimated = f"{rows[0]['completion']} completion · {rows[0]['prompt']} prompt estimated"
    assert tokens[0].startswith(estimated)
    assert tokens[1].startswith(f"{rows[1]['completion']} completion · {rows[1]['prompt']} prompt")
    # The live page's fragment carries the same.
    fragment = web("alice").get(f"/web/jobs/{job_id}?fragment=status").text
    assert 'class="job-cost"' in fragment
    assert web("bob").get(f"/web/jobs/{job_id}").status_code == 404


def test_a_model_without_prices_has_no_cost_on_the_job_page(site, web, runner):
    [job_id] = run_jobs(site, {"alice": ["Hello"]})["alice"]
    page = web("alice").get(f"/web/jobs/{job_id}").text
    cost = re.search(r'<dd class="job-cost">(.*?)</dd>', page, re.S)
    assert cost and _text(cost.group(1)).startswith("unknown (the model has no prices)")
    assert 'class="attempt-cost"' not in page


@pytest.mark.browser
def test_the_usage_and_job_pages_in_a_browser(priced, runner, page_as, openai_server):
    site = priced
    openai_server.push_fault(cut_after=2)
    jobs = run_jobs(site, {"alice": ["Tell me a story", "And another"], "bob": ["Hi"]})
    maya = page_as("manager")
    maya.goto("/web/")
    maya.click("nav >> text=Usage")
    expect(maya.locator("#usage-by tr[data-key]")).to_have_count(2)  # Alice, Bob
    maya.select_option("select[name=by]", "model")
    maya.click("#breakdown button[type=submit]")
    expect(maya.locator("#breakdown h2")).to_have_text("By model")
    expect(maya.locator("#usage-by tr[data-key]")).to_have_count(1)
    expect(maya.locator("#total-attempts")).to_have_text(str(len(ledger(site))))
    screenshot(maya, "usage-page")

    [cut] = [row for row in ledger(site) if row["estimated"]]
    owner = next(user for user, ids in jobs.items() if cut["job"] in ids)
    page = page_as(owner)
    page.goto(f"/web/jobs/{cut['job']}")
    expect(page.locator(".job-cost")).to_contain_text("estimated")
    expect(page.locator("#timeline li")).to_have_count(2)
    expect(page.locator("#timeline li").nth(0).locator(".attempt-cost")).to_contain_text(
        "(estimated)"
    )
    screenshot(page, "job-cost")
