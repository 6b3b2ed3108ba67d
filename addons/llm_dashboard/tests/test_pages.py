"""The pages over plain HTTP (httpx, no browser, no JavaScript), on SQLite and PostgreSQL: the
login form and its redirects, CSRF on every form, the flows that work without JavaScript
(bulk actions confirmed first, the queue form, the provider form), error pages in HTML for
pages and JSON for the API, and no page carrying a provider's API key (checked after every
test, by the ``site`` fixture, on every page answered)."""

from __future__ import annotations

import re

import pytest

from .conftest import API_KEY, LOGINS, PASSWORDS, csrf_of


def test_a_page_redirects_to_the_login_form_and_back(site, web):
    anonymous = web(None)
    answer = anonymous.get("/web/jobs?state=failed")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/web/login?next=/web/jobs%3Fstate%3Dfailed"
    assert anonymous.get("/").headers["location"] == "/web/"
    assert anonymous.get("/api/jobs").status_code == 401  # the API stays JSON
    assert anonymous.get("/api/jobs").json()["detail"].startswith("Authentication required")

    form = anonymous.get(answer.headers["location"])
    assert form.status_code == 200 and 'name="next" value="/web/jobs?state=failed"' in form.text
    fields = {"login": "alice", "password": "not hers", "next": "/web/jobs?state=failed"}
    wrong = anonymous.post("/web/login", data={**fields, "csrf_token": csrf_of(form.text)})
    assert wrong.status_code == 401 and "Wrong login or password." in wrong.text
    fields["password"] = PASSWORDS["alice"]
    logged = anonymous.post("/web/login", data={**fields, "csrf_token": csrf_of(wrong.text)})
    assert logged.status_code == 303 and logged.headers["location"] == "/web/jobs?state=failed"
    assert "llmjobs_session=" in logged.headers["set-cookie"]
    assert "HttpOnly" in logged.headers["set-cookie"]
    page = anonymous.get("/web/jobs?state=failed")
    assert page.status_code == 200 and "Alice" in page.text

    elsewhere = web(None)
    form = elsewhere.get("/web/login?next=//evil.example/")
    fields = {"login": "bob", "password": PASSWORDS["bob"], "next": "//evil.example/"}
    answer = elsewhere.post("/web/login", data={**fields, "csrf_token": csrf_of(form.text)})
    assert answer.headers["location"] == "/web/"  # only this site's pages


def test_failed_logins_on_the_form_share_the_apis_throttle(site, web):
    client = web(None)
    for _ in range(3):
        form = client.get("/web/login")
        data = {"login": "bob", "password": "guess", "csrf_token": csrf_of(form.text)}
        assert client.post("/web/login", data=data).status_code == 401
    for _ in range(2):
        assert (
            client.post("/api/session", json={"login": "bob", "password": "guess"}).status_code
            == 401
        )
    form = client.get("/web/login")
    data = {"login": "bob", "password": PASSWORDS["bob"], "csrf_token": csrf_of(form.text)}
    blocked = client.post("/web/login", data=data)
    assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
    assert 1 <= int(blocked.headers["Retry-After"]) <= 300


def test_forms_without_the_sessions_csrf_token_are_refused(site, web):
    site.pause()
    job_id = site.queue_job("alice", "Keep me")
    alice = web("alice")
    for data in ({}, {"csrf_token": "0" * 64}):
        refused = alice.post(f"/web/jobs/{job_id}/cancel", data=data)
        assert refused.status_code == 403
        assert "text/html" in refused.headers["content-type"]
        assert "This form has expired" in refused.text
    assert site.job(job_id)["state"] == "queued"
    assert alice.post("/web/logout").status_code == 403
    assert alice.get("/web/").status_code == 200  # still logged in

    done = alice.post(f"/web/jobs/{job_id}/cancel", data={"csrf_token": alice.csrf})
    assert done.status_code == 303 and done.headers["location"] == f"/web/jobs/{job_id}"
    assert site.job(job_id)["state"] == "cancelled"

    # The login form's own token: a login posted from elsewhere (no cookie) is refused.
    stranger = web(None)
    data = {"login": "alice", "password": PASSWORDS["alice"], "csrf_token": "forged"}
    assert stranger.post("/web/login", data=data).status_code == 403
    assert "llmjobs_session" not in stranger.cookies

    out = alice.post("/web/logout", data={"csrf_token": alice.csrf})
    assert out.status_code == 303 and out.headers["location"] == "/web/login"
    assert alice.get("/web/").status_code == 303


def test_bulk_cancel_by_filter_counts_then_acts_without_javascript(site, web):
    site.pause()
    alices = [site.queue_job("alice", f"Question {n}") for n in range(3)]
    bobs = site.queue_job("bob", "Bob's")
    alice = web("alice")
    listed = alice.get("/web/jobs", params={"state": "queued"})
    link = re.search(r'href="(/web/jobs/bulk/confirm\?[^"]*action=cancel[^"]*)"', listed.text)
    confirm = alice.get(link.group(1).replace("&amp;", "&"))
    assert confirm.status_code == 200
    assert re.search(r'id="matched">3<', confirm.text), confirm.text
    assert {site.job(j)["state"] for j in alices} == {"queued"}  # counted, not acted on

    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', confirm.text))
    assert form["state"] == "queued" and form["action"] == "cancel"
    done = alice.post("/web/jobs/bulk/filter", data=form)
    assert done.status_code == 200 and re.search(r'id="done">3<', done.text)
    assert {site.job(j)["state"] for j in alices} == {"cancelled"}
    assert site.job(bobs)["state"] == "queued"  # not hers: not matched

    # On a selection: another user's job is not acted on.
    bulk = {"action": "cancel", "ids": [bobs], "csrf_token": alice.csrf}
    selected = alice.post("/web/jobs/bulk", data=bulk)
    assert selected.status_code == 200 and re.search(r'id="done">0<', selected.text)
    assert site.job(bobs)["state"] == "queued"
    none = alice.post("/web/jobs/bulk", data={"action": "retry", "csrf_token": alice.csrf})
    assert none.status_code == 400 and "No job was selected" in none.text

    bad = alice.get("/web/jobs/bulk/confirm", params={"action": "cancel", "state": "nope"})
    assert bad.status_code == 422 and "State:" in bad.text


def test_the_job_list_filters_and_pages_without_javascript(site, web):
    site.pause()
    jobs = [site.queue_job("alice", f"Question {n}") for n in range(3)]
    site.queue_job("bob", "Bob's")
    alice, maya = web("alice"), web("manager")
    first = alice.get("/web/jobs", params={"limit": 2})
    assert re.findall(r'data-job="(\d+)"', first.text) == [str(jobs[2]), str(jobs[1])]
    following = re.search(r'href="([^"]+)" rel="next"', first.text).group(1)
    second = alice.get(following.replace("&amp;", "&"))
    assert re.findall(r'data-job="(\d+)"', second.text) == [str(jobs[0])]
    assert 'rel="next"' not in second.text

    rows = alice.get("/web/jobs", params={"fragment": "rows"})
    assert rows.text.lstrip().startswith("<tr") and "<html" not in rows.text
    assert len(re.findall(r'data-job="', rows.text)) == 3
    assert len(re.findall(r'data-job="', maya.get("/web/jobs").text)) == 4
    mine = maya.get("/web/jobs", params={"user_id": site.users["bob"]})
    assert len(re.findall(r'data-job="', mine.text)) == 1
    # An ordinary user's user filter is ignored: their jobs are theirs anyway.
    theirs = alice.get("/web/jobs", params={"user_id": site.users["bob"]})
    assert len(re.findall(r'data-job="', theirs.text)) == 3

    invalid = alice.get("/web/jobs", params={"created_after": "yesterday", "thread_id": "x"})
    assert invalid.status_code == 422
    assert "Created from:" in invalid.text and "Thread:" in invalid.text
    since = alice.get("/web/jobs", params={"created_after": "2000-01-01T00:00"})
    assert len(re.findall(r'data-job="', since.text)) == 3
    assert alice.get("/web/jobs", params={"q": "no such error"}).text.count('data-job="') == 0


def test_a_manager_configures_a_queue_with_the_form(site, web):
    maya, alice = web("manager"), web("alice")
    form = {
        "csrf_token": maya.csrf,
        "max_concurrent_jobs": "7",
        "retry_delay_minutes": "2",
        "attempt_deadline_seconds": "600",
    }  # the automatic retries box unticked
    saved = maya.post(f"/web/queues/{site.queue_id}", data=form)
    assert saved.status_code == 303 and saved.headers["location"].startswith("/web/queues")
    with site.registry.environment(readonly=True) as env:
        queue = env["llm.generation.queue"].browse(site.queue_id)
        assert (queue.max_concurrent_jobs, queue.retry_delay_minutes) == (7, 2)
        assert queue.auto_retry_failed is False and queue.attempt_deadline_seconds == 600
    page = maya.get("/web/queues")
    assert re.search(r'class="limit">7<', page.text)

    for value, message in (
        ("0", "Limit: Input should be greater than or equal to 1"),
        ("many", "Limit: Input should be a valid integer"),
        ("", "Limit: enter a number"),
    ):
        refused = maya.post(
            f"/web/queues/{site.queue_id}", data={**form, "max_concurrent_jobs": value}
        )
        assert refused.status_code == 422 and message in refused.text, refused.text
        assert f'value="{value}"' in refused.text  # the form keeps what was typed
    with site.registry.environment(readonly=True) as env:
        assert env["llm.generation.queue"].browse(site.queue_id).max_concurrent_jobs == 7

    paused = maya.post(f"/web/queues/{site.queue_id}/pause", data={"csrf_token": maya.csrf})
    assert paused.status_code == 303
    assert ">Resume<" in maya.get("/web/queues").text
    maya.post(f"/web/queues/{site.queue_id}/resume", data={"csrf_token": maya.csrf})
    assert ">Pause<" in maya.get("/web/queues").text

    # An ordinary user reads the queues, with no form, and may not post one.
    read = alice.get("/web/queues")
    assert read.status_code == 200 and "sim" in read.text
    assert 'action="/web/queues/' not in read.text
    refused = alice.post(f"/web/queues/{site.queue_id}", data={**form, "csrf_token": alice.csrf})
    assert refused.status_code == 403 and "Only LLM managers" in refused.text


def test_providers_are_for_managers_and_their_key_is_write_only(site, web):
    alice, maya = web("alice"), web("manager")
    refused = alice.get("/web/providers")
    assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]
    assert "Only LLM managers may see this page." in refused.text
    assert alice.get(f"/web/providers/{site.provider_id}").status_code == 403
    assert "/web/providers" not in alice.get("/web/").text  # no link in the navigation

    key = "sk-form-key-7d1e5a90c3"
    form = {"csrf_token": maya.csrf, "name": "other", "service": "anthropic", "timeout": "30"}
    made = maya.post("/web/providers/new", data={**form, "api_key": f"{key}\n", "active": "true"})
    assert made.status_code == 303
    provider_id = int(made.headers["location"].rsplit("=", 1)[1])
    listed = maya.get(made.headers["location"])
    assert "Saved provider 'other'." in listed.text
    edit = maya.get(f"/web/providers/{provider_id}")
    assert 'name="api_key" type="password" value=""' in edit.text
    assert "A key is set: leave empty to keep it." in edit.text

    kept = maya.post(f"/web/providers/{provider_id}", data={**form, "name": "other2"})
    assert kept.status_code == 303
    with site.registry.environment(readonly=True) as env:
        provider = env["llm.provider"].browse(provider_id)
        assert (provider.name, provider.active) == ("other2", False)
        assert provider.api_key.get_secret_value() == key  # kept, stripped of its newline
    removed = maya.post(f"/web/providers/{provider_id}", data={**form, "remove_key": "true"})
    assert removed.status_code == 303
    with site.registry.environment(readonly=True) as env:
        assert not env["llm.provider"].browse(provider_id).api_key

    invalid = maya.post("/web/providers/new", data={**form, "name": "", "api_key": key})
    assert invalid.status_code == 422 and "Name:" in invalid.text
    taken = maya.post("/web/providers/new", data={**form, "name": "sim", "api_key": key})
    assert taken.status_code == 422, taken.text
    for page in (listed, edit, invalid, taken, maya.get("/web/providers")):
        assert key not in page.text and API_KEY not in page.text


def test_errors_are_html_pages_for_pages_and_json_for_the_api(site, web):
    site.pause()
    bobs = site.queue_job("bob", "Bob's secret question")
    alice = web("alice")
    for path in (f"/web/jobs/{bobs}", "/web/jobs/999999", f"/web/jobs/{bobs}?fragment=status"):
        missing = alice.get(path)
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
        assert "not found (or not visible to you)" in missing.text
        assert "Bob's secret" not in missing.text
    nothing = alice.get("/web/no/such/page")
    assert nothing.status_code == 404 and "There is no page at /web/no/such/page." in nothing.text
    invalid = alice.get("/web/jobs/not-a-number")
    assert invalid.status_code == 422 and "text/html" in invalid.headers["content-type"]
    cancelled = alice.post(f"/web/jobs/{bobs}/cancel", data={"csrf_token": alice.csrf})
    assert cancelled.status_code == 404 and site.job(bobs)["state"] == "queued"

    api = alice.get("/api/jobs/999999")
    assert api.status_code == 404 and api.json()["detail"].startswith("Generation job 999999")
    assert alice.get("/api/nothing").json() == {"detail": "Not Found"}
    assert "/web/login" not in alice.get("/openapi.json").text  # pages are not the API's


@pytest.mark.parametrize("user", ["alice", "manager"])
def test_every_page_renders_for_each_user(site, web, runner, openai_server, user):
    openai_server.push_fault(status=400, message="Unsupported parameter: max_tokens")
    failed = site.queue_job("alice", "Will fail")
    site.wait_job(failed, "failed")  # before the next one: the fault is the next request's
    done = site.queue_job("alice", "Will complete")
    site.wait_job(done, "completed")
    client = web(user)
    overview = client.get("/web/")
    assert overview.status_code == 200
    assert "Unsupported parameter" in overview.text and f"/web/jobs/{failed}" in overview.text
    assert re.search(
        r'class="stat completed"[^>]*>\s*<div class="stat-label">[^<]*</div>\s*'
        r'<div class="stat-value">1<',
        overview.text,
    )
    group = re.search(r'<a href="(/web/jobs\?q=[^"]+)"[^>]*>[^<]*Unsupported', overview.text)
    listed = client.get(group.group(1).replace("&amp;", "&"))  # the group's jobs
    assert re.findall(r'data-job="(\d+)"', listed.text) == [str(failed)]
    fragment = client.get("/web/", params={"fragment": 1})
    assert "<html" not in fragment.text and "Recent failures" in fragment.text
    job = client.get(f"/web/jobs/{done}")
    assert job.status_code == 200 and site.job(done)["reply"] in job.text
    assert 'data-live="0"' in job.text
    status = client.get(f"/web/jobs/{failed}", params={"fragment": "status"})
    assert "Unsupported parameter" in status.text and "<html" not in status.text
    assert ">Retry<" in status.text
    for path in ("/web/jobs", "/web/queues"):
        assert client.get(path).status_code == 200
    expected = 200 if user == "manager" else 403
    for path in ("/web/providers", "/web/providers/new", f"/web/providers/{site.provider_id}"):
        assert client.get(path).status_code == expected


def test_the_login_page_names_no_user_and_keeps_what_was_typed(site, web):
    client = web(None)
    form = client.get("/web/login")
    data = {"login": LOGINS["manager"], "password": "", "csrf_token": csrf_of(form.text)}
    empty = client.post("/web/login", data=data)
    assert empty.status_code == 400 and "Enter your login and your password." in empty.text
    assert 'value="maya"' in empty.text and "Log out" not in empty.text


def test_a_manager_sends_unattended_jobs_in_batches_and_a_job_shows_its_batch(site, web):
    maya, alice = web("manager"), web("alice")
    form = {
        "csrf_token": maya.csrf,
        "max_concurrent_jobs": "5",
        "retry_delay_minutes": "5",
        "attempt_deadline_seconds": "3600",
        "auto_retry_failed": "true",
        "execution_mode": "stream",
        "batch_unattended": "true",
        "batch_max_size": "1",
        "batch_max_wait_seconds": "30",
    }
    refused = maya.post(f"/web/queues/{site.queue_id}", data={**form, "batch_max_size": "0"})
    assert refused.status_code == 422 and "Batch size: Input should be greater" in refused.text
    saved = maya.post(f"/web/queues/{site.queue_id}", data=form)
    assert saved.status_code == 303
    with site.registry.environment(readonly=True) as env:
        queue = env["llm.generation.queue"].browse(site.queue_id)
        assert queue.batch_unattended and queue.batch_max_size == 1
        assert queue.batch_max_wait_seconds == 30 and not queue.batch_requeue_unfinished

    thread_id = site.thread("alice", "Overnight")
    with site.registry.environment(user=site.users["alice"]) as env:
        job = env["llm.generation.job"].create(
            {"thread_id": thread_id, "interactive": False, "generation_inputs": {"prompt": "Hi"}}
        )
        job.action_queue()
        job_id = job.id
    with site.registry.environment() as env:  # the status cron's round submits it
        env["llm.generation.queue"]._check_job_statuses()
        batch = env["llm.generation.job"].browse(job_id).batch_id
        assert batch.external_id
        external_id = batch.external_id
    page = alice.get(f"/web/jobs/{job_id}")
    assert page.status_code == 200
    assert "a request of a provider batch" in page.text
    assert f'<span class="mono">{external_id}</span>' in page.text
    queues = maya.get("/web/queues").text
    assert 'class="batch-count">1 job in 1 batch<' in queues
    assert re.search(r"Running</dt><dd>0 of", queues)  # batch jobs take no worker slot
