"""The chat pages: a user converses and watches the reply stream in, queued or direct, sees
their own threads and jobs only; and the same pages work without JavaScript."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import screenshot

SLOW_REPLY = "[sim:tokens=40 token_delay=0.04]"


def thread_id_of(url: str) -> int:
    match = re.search(r"/web/threads/(\d+)$", url)
    assert match, url
    return int(match.group(1))


def replies(site, thread_id: int) -> list[str]:
    with site.registry.environment(readonly=True) as env:
        messages = env["llm.message"].search(
            [("thread_id", "=", thread_id), ("llm_role", "=", "assistant")], order="id"
        )
        return [message.body for message in messages]


def watch_reply(page, timeout: float = 20.0) -> list[int]:
    """The lengths the last assistant bubble's text had, until the status line clears."""
    lengths: list[int] = []
    deadline = time.monotonic() + timeout
    bubble = page.locator("#messages .message.assistant .body").last
    while time.monotonic() < deadline:
        if bubble.count():
            length = len(bubble.inner_text())
            if not lengths or lengths[-1] != length:
                lengths.append(length)
        if page.locator("#stop").is_hidden() and lengths and lengths[-1] > 0:
            return lengths
        time.sleep(0.03)
    raise AssertionError(f"the reply did not finish; lengths seen: {lengths}")


@pytest.mark.browser
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", ["queue", "direct"])
def test_a_user_converses_and_watches_the_reply_stream_in(site, runner, alice_page, mode):
    page = alice_page
    page.goto("/web/threads")
    page.fill("#new-thread input[name=name]", f"Chat {mode}")
    page.click("#new-thread button[type=submit]")
    page.wait_for_url(re.compile(r"/web/threads/\d+$"))
    thread_id = thread_id_of(page.url)

    page.fill("#composer textarea", f"Tell me about leases {SLOW_REPLY}")
    page.check(f"#composer input[value={mode}]")
    page.click("#composer button[type=submit]")
    lengths = watch_reply(page)

    assert len(lengths) >= 3, f"the reply did not grow in the page: {lengths}"
    assert lengths == sorted(lengths)
    stored = replies(site, thread_id)
    assert len(stored) == 1
    assert page.locator("#messages .message.assistant .body").last.inner_text() == stored[0]
    assert (
        page.locator("#messages .message.user .body")
        .last.inner_text()
        .startswith("Tell me about leases")
    )
    assert page.url.endswith(f"/web/threads/{thread_id}")  # no reload, no navigation
    screenshot(page, f"chat-{mode}")
    with site.registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].search([("thread_id", "=", thread_id)])
        assert len(jobs) == (1 if mode == "queue" else 0)
        assert jobs.mapped("state") == (["completed"] if mode == "queue" else [])
    if mode == "queue":  # the thread's jobs, refreshed in place when the reply ended
        page.wait_for_selector(f"#thread-jobs a[href='/web/jobs/{jobs.id}']")
        assert "completed" in page.locator("#thread-jobs").inner_text()


@pytest.mark.browser
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stop_cancels_a_queued_reply_and_a_reopened_page_follows_a_running_one(
    site, runner, alice_page
):
    page = alice_page
    thread_id = site.thread("alice", "Long one")
    page.goto(f"/web/threads/{thread_id}")
    page.fill("#composer textarea", "[sim:tokens=400 token_delay=0.05] a long answer")
    page.click("#composer button[type=submit]")
    bubble = page.locator("#messages .message.assistant .body").last
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('#messages .message.assistant .body');"
        " return b.length && b[b.length - 1].textContent.length > 10; }"
    )
    # Opened again while it streams, the page follows the job from its stream log.
    page.reload()
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('#messages .message.assistant .body');"
        " return b.length && b[b.length - 1].textContent.length > 20; }"
    )
    assert page.locator("#stop").is_visible()
    page.click("#stop")
    page.wait_for_selector("#status.cancelled")
    with site.registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].search([("thread_id", "=", thread_id)])
        assert job.state == "cancelled"
    assert bubble.inner_text()  # the partial reply stays, marked


@pytest.mark.parametrize("mode", ["queue", "direct"])
def test_without_javascript_the_form_generates_the_reply(site, runner, web, mode):
    alice = web("alice")
    page = alice.get("/web/threads")
    assert page.status_code == 200 and "Start a conversation" in page.text
    started = alice.post(
        "/web/threads", data={"model_id": site.model_id, "name": "Plain", "csrf_token": alice.csrf}
    )
    assert started.status_code == 303
    thread_id = thread_id_of(started.headers["location"])
    sent = alice.post(
        f"/web/threads/{thread_id}/send",
        data={"content": "Hello there", "mode": mode, "csrf_token": alice.csrf},
    )
    assert sent.status_code == 303, sent.text
    deadline = time.monotonic() + 20
    while not (done := [r for r in replies(site, thread_id) if r]):
        assert time.monotonic() < deadline, "no reply"
        time.sleep(0.1)
    html = alice.get(f"/web/threads/{thread_id}").text
    assert "Hello there" in html and done[0] in html
    if mode == "queue":
        assert "/web/jobs/" in html  # the thread's job, linked


def test_a_user_sees_only_their_own_threads(site, web):
    mine = site.thread("alice", "Alice private chat")
    bob = web("bob")
    listing = bob.get("/web/threads")
    assert listing.status_code == 200
    assert "Alice private chat" not in listing.text
    assert bob.get(f"/web/threads/{mine}").status_code == 404
    refused = bob.post(f"/web/threads/{mine}/send", data={"content": "hi", "csrf_token": bob.csrf})
    assert refused.status_code == 404
    assert replies(site, mine) == []
    manager = web("manager")
    assert "Alice private chat" in manager.get("/web/threads").text


def test_chat_forms_need_the_csrf_token_and_valid_input(site, web):
    alice = web("alice")
    thread_id = site.thread("alice")
    forged = alice.post(f"/web/threads/{thread_id}/send", data={"content": "hi"})
    assert forged.status_code == 403
    assert replies(site, thread_id) == []
    unknown = alice.post("/web/threads", data={"model_id": 999_999, "csrf_token": alice.csrf})
    assert unknown.status_code == 422 and "no chat model 999999" in unknown.text
    with site.registry.environment(readonly=True) as env:
        assert env["llm.thread"].search_count([]) == 1
