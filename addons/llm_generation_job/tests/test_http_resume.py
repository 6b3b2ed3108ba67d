"""Resuming a generation's event stream after the client and the worker both went away: the
client reads part of a queued generation, hangs up, the worker producing it is SIGKILLed, and
the client reconnects with ``Last-Event-ID``; another worker process takes the job over. The
client must get exactly the rest: every piece after the last it saw, the restart shown as
such, then the new attempt's reply, ending in one complete reply."""

from __future__ import annotations

import pytest
from httpx_sse import connect_sse

from .test_http_api import setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

LEASE = 4  # seconds: the dead worker's job is taken over this long after its last renewal
SLOW = "[sim:tokens=60 token_delay=0.08]"  # about 5 s a reply


def test_a_client_resumes_with_last_event_id_after_the_worker_died(
    api,
    setup,  # noqa: F811
    start_workers,
    registry,
):
    [first_worker] = start_workers(1, lease=LEASE)
    alice = api.client("alice")
    url = f"/api/threads/{setup['thread']}/generate"
    seen = []
    with connect_sse(
        alice, "POST", url, json={"content": f"{SLOW} go", "use_queue": True}
    ) as source:
        for event in source.iter_sse():
            seen.append(event)
            if sum(e.event == "message_chunk" for e in seen) == 5:
                break  # the client goes away mid-reply
    job_id = next(e.json()["job_id"] for e in seen if e.event == "job_status")
    chunks = [e for e in seen if e.event == "message_chunk"]
    assert [int(e.id) for e in chunks] == [1, 2, 3, 4, 5]
    last_id = chunks[-1].id

    first_worker.kill()  # while it streams the reply
    first_worker.wait()
    start_workers(1, lease=LEASE)

    rest = []
    with connect_sse(
        alice, "GET", f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": last_id}
    ) as source:
        assert source.response.status_code == 200
        rest = list(source.iter_sse())

    logged = [e for e in rest if e.event in ("message_chunk", "restart")]
    ids = [int(e.id) for e in logged]
    assert ids == list(range(int(last_id) + 1, int(last_id) + 1 + len(ids)))  # exactly the rest
    restarts = [e for e in logged if e.event == "restart"]
    assert len(restarts) == 1 and restarts[0].json()["attempt"] == 2
    after_restart = logged[logged.index(restarts[0]) + 1 :]
    reply = "".join(e.json()["content"] for e in after_restart)
    assert rest[-1].event == "done" and rest[-1].json()["job_id"] == job_id
    assert rest[-1].json()["message"]["body"] == reply
    assert len(reply.split()) >= 59  # the whole reply

    detail = alice.get(f"/api/jobs/{job_id}").json()
    assert [a["outcome"] for a in detail["attempts"]] == ["lost", "completed"]
    assert detail["output_message"]["body"] == reply
    messages = alice.get(f"/api/threads/{setup['thread']}/messages").json()
    assert [m["llm_role"] for m in messages] == ["user", "assistant"]
