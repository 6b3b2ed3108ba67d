"""The HTTP API against a real server (uvicorn on loopback), on SQLite and PostgreSQL, as its
users meet it: anonymous callers, two ordinary users who must not see each other's threads
and jobs, and an LLM manager. Every test also checks (in the ``api`` fixture) that the
providers' API key is in no response and no log line."""

from __future__ import annotations

import re

import httpx
import pytest
from httpx_sse import connect_sse

from addons.llm_generation_job.follow import wait_finished

from .conftest import API_KEY

SLOW = "[sim:tokens=40 token_delay=0.05]"


@pytest.fixture
def setup(registry, users, openai_server):
    """A provider on the simulator (with a queue), its model, and a thread of Alice's."""
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "sim", "service": "openai", "api_base": openai_server.url, "api_key": API_KEY}
        )
        model = env["llm.model"].create(
            {"name": "sim-model", "provider_id": provider.id, "default": True}
        )
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        thread = (
            env["llm.thread"]
            .with_user(users["alice"])
            .create({"name": "Alice's chat", "provider_id": provider.id, "model_id": model.id})
        )
        return {"provider": provider.id, "model": model.id, "queue": queue.id, "thread": thread.id}


def events(client: httpx.Client, method: str, url: str, **options) -> list:
    with connect_sse(client, method, url, **options) as source:
        assert source.response.status_code == 200, source.response.read()
        return list(source.iter_sse())


def test_every_endpoint_refuses_anonymous_callers(api):
    anonymous = api.client(None)
    spec = anonymous.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method in operations:
            if (method, path) == ("post", "/api/session"):
                continue
            url = re.sub(r"\{\w+\}", "1", path.replace("{action}", "cancel"))
            response = anonymous.request(method.upper(), url)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["detail"].startswith("Authentication required")
            checked += 1
    assert checked >= 25


def test_login_sets_an_httponly_session_whose_writes_need_the_csrf_token(api, registry, users):
    with registry.environment() as env:
        env["res.users"].browse(users["alice"]).set_password("correct horse")
    browser = api.client(None)
    refused = browser.post("/api/session", json={"login": "alice", "password": "wrong one"})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Wrong login or password."}
    answer = browser.post("/api/session", json={"login": "alice", "password": "correct horse"})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert "llmjobs_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    csrf = answer.json()["csrf_token"]
    assert answer.json()["user"]["login"] == "alice"
    assert browser.get("/api/session").json()["csrf_token"] == csrf

    forged = browser.post("/api/tokens", json={"name": "from another site"})
    assert forged.status_code == 403
    assert "X-CSRF-Token" in forged.json()["detail"]
    wrong = browser.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    made = browser.post("/api/tokens", json={"name": "script"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201

    assert browser.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert browser.get("/api/session").status_code == 401


def test_failed_logins_are_throttled_across_the_login(api, registry, users):
    with registry.environment() as env:
        env["res.users"].browse(users["bob"]).set_password("bob's password")
    client = api.client(None)
    for _ in range(5):
        assert (
            client.post("/api/session", json={"login": "bob", "password": "guess"}).status_code
            == 401
        )
    blocked = client.post("/api/session", json={"login": "bob", "password": "bob's password"})
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 300
    assert "Too many failed logins" in blocked.json()["detail"]
    with registry.environment(readonly=True) as env:
        assert env["res.users.login.failure"].search_count([("login", "=", "bob")]) == 5


def test_api_tokens_are_shown_once_stored_hashed_and_revocable(api, registry, users):
    alice = api.client("alice")
    made = alice.post("/api/tokens", json={"name": "nightly"}).json()
    token = made["token"]
    assert token.startswith("llmj_") and made["hint"] == token[:11]
    listed = alice.get("/api/tokens").json()
    assert {t["name"] for t in listed} == {"tests", "nightly"}
    assert all("token" not in t for t in listed)
    with registry.environment(readonly=True) as env:
        stored = env["res.users.apikey"].search([("id", "=", made["id"])])
        assert token not in str(stored.read()[0].values())
    script = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"})
    assert script.get("/api/session").json()["user"]["login"] == "alice"
    assert api.client("bob").delete(f"/api/tokens/{made['id']}").status_code == 404
    assert alice.delete(f"/api/tokens/{made['id']}").status_code == 204
    revoked = script.get("/api/session")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert alice.post("/api/tokens", json={"name": ""}).json()["errors"][0]["field"] == "name"
    malformed = httpx.get(f"{api.url}/api/threads", headers={"Authorization": "Basic abc"})
    assert malformed.status_code == 401 and "Bearer" in malformed.json()["detail"]


def test_threads_belong_to_their_user(api, setup):
    alice, bob, manager = api.client("alice"), api.client("bob"), api.client("manager")
    thread = setup["thread"]
    assert [t["id"] for t in alice.get("/api/threads").json()] == [thread]
    assert bob.get("/api/threads").json() == []
    assert thread in [t["id"] for t in manager.get("/api/threads").json()]
    for method, url, body in [
        ("GET", f"/api/threads/{thread}", None),
        ("PATCH", f"/api/threads/{thread}", {"name": "mine now"}),
        ("GET", f"/api/threads/{thread}/messages", None),
        ("POST", f"/api/threads/{thread}/messages", {"body": "hi"}),
        ("POST", f"/api/threads/{thread}/generate", {"content": "hi"}),
        ("POST", f"/api/threads/{thread}/stop", None),
        ("DELETE", f"/api/threads/{thread}", None),
    ]:
        response = bob.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert "Alice" not in response.text
    assert alice.get(f"/api/threads/{thread}").json()["name"] == "Alice's chat"
    assert alice.get("/api/models").json() == [
        {
            "id": setup["model"],
            "name": "sim-model",
            "provider_id": setup["provider"],
            "provider_name": "sim",
            "default": True,
        }
    ]

    created = bob.post("/api/threads", json={"provider_id": setup["provider"], "name": "Bob's"})
    assert created.status_code == 201
    own = created.json()
    assert (
        bob.patch(f"/api/threads/{own['id']}", json={"name": "Renamed"}).json()["name"] == "Renamed"
    )
    posted = bob.post(f"/api/threads/{own['id']}/messages", json={"body": "a note"})
    assert posted.status_code == 201 and posted.json()["llm_role"] == "user"
    assert [m["body"] for m in bob.get(f"/api/threads/{own['id']}/messages").json()] == ["a note"]
    assert bob.delete(f"/api/threads/{own['id']}").status_code == 204
    assert bob.get(f"/api/threads/{own['id']}").status_code == 404


def test_bad_bodies_are_422_naming_the_field(api, setup):
    alice = api.client("alice")
    for body, field in [
        ({}, "provider_id"),
        ({"provider_id": "seven"}, "provider_id"),
        ({"provider_id": setup["provider"], "name": ""}, "name"),
    ]:
        response = alice.post("/api/threads", json=body)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field
        assert field in response.json()["detail"]
    missing = alice.post("/api/threads", json={"provider_id": 999})
    assert missing.status_code == 422 and "provider_id" in missing.json()["detail"]
    not_json = alice.post(
        "/api/threads", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    option = alice.post(
        f"/api/threads/{setup['thread']}/generate",
        json={"use_queue": True, "options": {"model": "other"}},
    )
    assert option.status_code == 422 and "'model'" in option.json()["detail"]
    bad_filter = alice.get("/api/jobs", params={"state": "finished"})
    assert (
        bad_filter.status_code == 422 and bad_filter.json()["errors"][0]["field"] == "query.state.0"
    )


def test_providers_are_for_managers_and_never_show_the_key(api, setup):
    assert api.client("alice").get("/api/providers").status_code == 403
    manager = api.client("manager")
    listed = manager.get("/api/providers").json()
    assert listed == [
        {
            "id": setup["provider"],
            "name": "sim",
            "service": "openai",
            "api_base": listed[0]["api_base"],
            "timeout": 60.0,
            "active": True,
            "api_key_set": True,
        }
    ]
    assert manager.get(f"/api/providers/{setup['provider']}").json() == listed[0]
    assert manager.get("/api/providers/999").status_code == 404
    made = manager.post(
        "/api/providers", json={"name": "other", "service": "anthropic", "api_key": API_KEY}
    )
    assert made.status_code == 201 and made.json()["api_key_set"] is True
    assert manager.post("/api/providers", json={"name": "x", "service": "nope"}).status_code == 422
    removed = manager.patch(f"/api/providers/{made.json()['id']}", json={"api_key": ""})
    assert removed.json()["api_key_set"] is False
    assert manager.delete(f"/api/providers/{made.json()['id']}").status_code == 204
    in_use = manager.delete(f"/api/providers/{setup['provider']}")
    assert in_use.status_code == 400 and "reference" in in_use.json()["detail"]


def test_a_direct_generation_streams_its_reply_as_events(api, setup, registry):
    alice = api.client("alice")
    got = events(
        alice,
        "POST",
        f"/api/threads/{setup['thread']}/generate",
        json={"content": "hello", "use_queue": False},
    )
    kinds = [event.event for event in got]
    assert kinds[:2] == ["message_create", "message_create"]
    assert kinds[-2:] == ["message_update", "done"] and "message_chunk" in kinds
    text = "".join(event.json()["content"] for event in got if event.event == "message_chunk")
    assert got[-1].json()["message"]["body"] == text and text
    messages = alice.get(f"/api/threads/{setup['thread']}/messages").json()
    assert [(m["llm_role"], m["state"]) for m in messages] == [
        ("user", "done"),
        ("assistant", "done"),
    ]
    assert messages[1]["body"] == text


def test_a_queued_generation_streams_events_with_ids_and_refuses_a_second_one(api, setup, runner):
    alice = api.client("alice")
    url = f"/api/threads/{setup['thread']}/generate"
    with connect_sse(
        alice, "POST", url, json={"content": f"{SLOW} hi", "use_queue": True}
    ) as source:
        stream = source.iter_sse()
        first = [next(stream) for _ in range(3)]
        busy = api.client("alice").post(url, json={"content": "again", "use_queue": True})
        assert busy.status_code == 409 and "already generating" in busy.json()["detail"]
        got = first + list(stream)
    job_id = next(e.json()["job_id"] for e in got if e.event == "job_status")
    chunks = [e for e in got if e.event == "message_chunk"]
    assert [int(e.id) for e in chunks] == list(range(1, len(chunks) + 1))
    assert got[-1].event == "done" and got[-1].json()["job_id"] == job_id
    assert got[-1].json()["message"]["body"] == "".join(e.json()["content"] for e in chunks)
    assert alice.get(f"/api/jobs/{job_id}").json()["state"] == "completed"


def test_a_disconnected_client_does_not_stop_a_queued_job_but_stop_does(
    api, setup, runner, registry
):
    alice = api.client("alice")
    url = f"/api/threads/{setup['thread']}/generate"
    with connect_sse(
        alice, "POST", url, json={"content": f"{SLOW} a", "use_queue": True}
    ) as source:
        job_id = next(e.json()["job_id"] for e in source.iter_sse() if e.event == "job_status")
    wait_finished(registry, [job_id], timeout=30)
    assert alice.get(f"/api/jobs/{job_id}").json()["state"] == "completed"

    slow = "[sim:tokens=400 token_delay=0.05]"
    with connect_sse(
        alice, "POST", url, json={"content": f"{slow} b", "use_queue": True}
    ) as source:
        for event in source.iter_sse():
            if event.event == "message_chunk":
                break  # the reply streams: hang up
    job = alice.get("/api/jobs", params={"thread_id": setup["thread"]}).json()["items"][0]
    assert job["state"] == "running"
    assert api.client("bob").post(f"/api/threads/{setup['thread']}/stop").status_code == 404
    stopped = alice.post(f"/api/threads/{setup['thread']}/stop")
    assert stopped.status_code == 200 and stopped.json()["job_id"] == job["id"]
    wait_finished(registry, [job["id"]], timeout=30)
    assert alice.get(f"/api/jobs/{job['id']}").json()["state"] == "cancelled"
    assert alice.post(f"/api/threads/{setup['thread']}/stop").status_code == 404


def _jobs(registry, thread_id, count, prompt="q"):
    """``count`` draft jobs on the thread, created by its owner."""
    with registry.environment() as env:
        owner = env["llm.thread"].browse(thread_id).user_id
        jobs = (
            env["llm.generation.job"]
            .with_user(owner)
            .create(
                [
                    {"thread_id": thread_id, "generation_inputs": {"prompt": f"{prompt}{n}"}}
                    for n in range(count)
                ]
            )
        )
        return jobs.ids


def test_jobs_are_listed_with_filters_and_cursor_pages(api, setup, registry, users):
    ids = _jobs(registry, setup["thread"], 5)
    alice = api.client("alice")
    pages, cursor = [], None
    while True:
        page = alice.get(
            "/api/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        pages.append([job["id"] for job in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:]]
    assert api.client("bob").get("/api/jobs").json()["items"] == []
    manager = api.client("manager")
    assert len(manager.get("/api/jobs", params={"user_id": users["alice"]}).json()["items"]) == 5
    assert manager.get("/api/jobs", params={"user_id": users["bob"]}).json()["items"] == []

    with registry.environment() as env:
        job = env["llm.generation.job"].browse(ids[0])
        job.action_queue()
        job.action_fail("The provider said: quota exceeded for this key")
    by_state = alice.get("/api/jobs", params=[("state", "failed"), ("state", "queued")]).json()
    assert [j["id"] for j in by_state["items"]] == [ids[0]]
    by_text = alice.get("/api/jobs", params={"q": "QUOTA exceeded"}).json()["items"]
    assert [j["id"] for j in by_text] == [ids[0]]
    assert alice.get("/api/jobs", params={"q": "nothing like it"}).json()["items"] == []
    finished = alice.get("/api/jobs", params={"finished_after": "2000-01-01T00:00:00Z"}).json()
    assert [j["id"] for j in finished["items"]] == [ids[0]]
    assert (
        alice.get("/api/jobs", params={"created_before": "2000-01-01T00:00:00Z"}).json()["items"]
        == []
    )
    by_thread = alice.get(
        "/api/jobs", params={"thread_id": setup["thread"], "provider_id": setup["provider"]}
    )
    assert len(by_thread.json()["items"]) == 5


def test_a_job_shows_its_inputs_reply_and_attempt_timeline(api, setup, registry, runner):
    alice = api.client("alice")
    got = events(
        alice,
        "POST",
        f"/api/threads/{setup['thread']}/generate",
        json={"content": "[sim:tokens=5] hi", "use_queue": True, "options": {"temperature": 0.2}},
    )
    job_id = got[-1].json()["job_id"]
    detail = alice.get(f"/api/jobs/{job_id}").json()
    assert detail["generation_inputs"]["options"] == {"temperature": 0.2}
    assert detail["input_message"]["body"] == "[sim:tokens=5] hi"
    assert detail["output_message"]["body"] == got[-1].json()["message"]["body"]
    [attempt] = detail["attempts"]
    assert attempt["outcome"] == "completed" and attempt["worker"]
    assert attempt["started_at"] <= attempt["first_token_at"] <= attempt["ended_at"]
    assert attempt["completion_tokens"] == 5 and attempt["prompt_tokens"] > 0
    bob = api.client("bob")
    for method, url in [
        ("GET", f"/api/jobs/{job_id}"),
        ("GET", f"/api/jobs/{job_id}/events"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("POST", f"/api/jobs/{job_id}/retry"),
    ]:
        refused = bob.request(method, url)
        assert refused.status_code == 404 and "hi" not in refused.text, (method, url)
    logged = [int(e.id) for e in got if e.event == "message_chunk"]
    replay = events(alice, "GET", f"/api/jobs/{job_id}/events", params={"after": 1})
    assert [int(e.id) for e in replay if e.event == "message_chunk"] == logged[1:]
    assert replay[-1].event == "done"
    assert api.client("manager").get(f"/api/jobs/{job_id}").json()["id"] == job_id
    conflict = alice.post(f"/api/jobs/{job_id}/cancel")
    assert conflict.status_code == 409 and "it is completed" in conflict.json()["detail"]
    assert alice.post(f"/api/jobs/{job_id}/retry").status_code == 409


def test_bulk_actions_by_ids_or_by_filter_answer_with_counts(api, setup, registry, users):
    ids = _jobs(registry, setup["thread"], 4)
    with registry.environment() as env:
        for job in env["llm.generation.job"].browse(ids):
            job.action_queue()
        bob_thread = (
            env["llm.thread"]
            .with_user(users["bob"])
            .create({"name": "Bob's", "provider_id": setup["provider"]})
        )
    bob_job = _jobs(registry, bob_thread.id, 1)[0]
    with registry.environment() as env:
        env["llm.generation.job"].browse(bob_job).action_queue()
    alice = api.client("alice")
    queued = {"filter": {"state": ["queued"]}}
    assert alice.post("/api/jobs/bulk/cancel", json={**queued, "dry_run": True}).json() == {
        "matched": 4,
        "done": 0,
        "refused": [],
    }
    assert alice.post("/api/jobs/bulk/cancel", json={"ids": ids[:1]}).json()["done"] == 1
    by_filter = alice.post("/api/jobs/bulk/cancel", json=queued).json()
    assert by_filter == {"matched": 3, "done": 3, "refused": []}
    with registry.environment(readonly=True) as env:
        assert env["llm.generation.job"].browse(bob_job).state == "queued"  # not Alice's
    again = alice.post("/api/jobs/bulk/cancel", json={"ids": ids[:2]}).json()
    assert again["matched"] == 2 and again["done"] == 0
    assert [r["id"] for r in again["refused"]] == ids[:2]
    assert "it is cancelled" in again["refused"][0]["reason"]
    assert alice.post("/api/jobs/bulk/cancel", json={"ids": [bob_job]}).json()["matched"] == 0
    both = alice.post("/api/jobs/bulk/retry", json={"ids": [1], "filter": {}})
    assert both.status_code == 422 and "either `ids` or `filter`" in both.text
    assert alice.post("/api/jobs/bulk/delete", json={"ids": [1]}).status_code == 422


def test_queues_and_workers(api, setup, runner):
    alice, manager = api.client("alice"), api.client("manager")
    [queue] = alice.get("/api/queues").json()
    assert queue["provider_name"] == "sim" and queue["health"] == "healthy"
    assert queue["live_workers"] == 1 and queue["job_counts"]["queued"] == 0
    assert (
        alice.patch(f"/api/queues/{queue['id']}", json={"max_concurrent_jobs": 9}).status_code
        == 403
    )
    assert alice.post(f"/api/queues/{queue['id']}/pause").status_code == 403
    changed = manager.patch(f"/api/queues/{queue['id']}", json={"max_concurrent_jobs": 9})
    assert changed.json()["max_concurrent_jobs"] == 9
    assert (
        manager.patch(f"/api/queues/{queue['id']}", json={"max_concurrent_jobs": 0}).status_code
        == 422
    )
    paused = manager.post(f"/api/queues/{queue['id']}/pause").json()
    assert paused["enabled"] is False and paused["health"] == "disabled"
    assert manager.post(f"/api/queues/{queue['id']}/resume").json()["enabled"] is True
    assert alice.get("/api/workers").status_code == 403
    [worker] = manager.get("/api/workers").json()
    assert worker["live"] is True and worker["slots"] == 4 and worker["running_jobs"] == 0
    assert alice.get("/api/queues/999").status_code == 404
    one = alice.get(f"/api/queues/{queue['id']}", params={"window_hours": 1}).json()
    assert one["performance"]["window_hours"] == 1 and one["max_concurrent_jobs"] == 9


def test_the_openapi_document_covers_every_endpoint_and_error(api):
    spec = api.client(None).get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/api/session",
        "/api/tokens",
        "/api/tokens/{token_id}",
        "/api/threads",
        "/api/threads/{thread_id}",
        "/api/threads/{thread_id}/messages",
        "/api/threads/{thread_id}/generate",
        "/api/threads/{thread_id}/stop",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/events",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs/{job_id}/retry",
        "/api/jobs/bulk/{action}",
        "/api/queues",
        "/api/queues/{queue_id}",
        "/api/queues/{queue_id}/pause",
        "/api/workers",
        "/api/providers",
        "/api/providers/{provider_id}",
        "/api/models",
        "/metrics",
    ]:
        assert path in paths, path
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert {"401", "403", "404", "422"} <= set(operation["responses"]), (method, path)
    assert "409" in paths["/api/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "429" in paths["/api/session"]["post"]["responses"]
    generate = paths["/api/threads/{thread_id}/generate"]["post"]["responses"]["200"]
    assert "text/event-stream" in generate["content"]
    assert "ErrorOut" in spec["components"]["schemas"]
