"""Wake-ups between processes: another process's commit wakes a waiter (NOTIFY on
PostgreSQL, the commit watcher on SQLite), and a long-lived process remembers a bounded number
of payloads without ever missing a signal."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from core import notify
from core.notify import notifier_for

from .conftest import TEST_ADDONS
from .statements import statements

ROOT = Path(__file__).resolve().parent.parent
SENDER = """
import sys
from core import Registry
from core.notify import notifier_for

registry = Registry(sys.argv[1], addons_path=[sys.argv[2]], addons=["test_orm"])
with registry.environment() as env:
    env["test.partner"].create({"name": "from another process"})
    notifier_for(registry).send(env.cr, "test_wakeup", "7")
registry.close()
"""


def test_a_commit_in_another_process_wakes_a_waiter(registry, db_url):
    notifier = notifier_for(registry)
    notifier.listen("test_wakeup")
    notifier.watch_commits("test_wakeup")
    time.sleep(0.2)  # the listener (or the watcher) is up
    since = notifier.generation("test_wakeup", "7")
    sender = subprocess.Popen([sys.executable, "-c", SENDER, db_url, str(TEST_ADDONS)], cwd=ROOT)
    try:
        started = time.monotonic()
        # The timeout is long: not a poll that happens to come, the signal must wake it.
        assert notifier.wait("test_wakeup", "7", since, timeout=60)
        assert time.monotonic() - started < 30
    finally:
        assert sender.wait(timeout=60) == 0
    with registry.environment(readonly=True) as env:
        assert env["test.partner"].search_count([("name", "=", "from another process")]) == 1


def test_payloads_are_forgotten_past_the_bound_and_no_signal_is_missed(registry, monkeypatch):
    monkeypatch.setattr(notify, "MAX_TRACKED", 20)
    notifier = notifier_for(registry)
    since = notifier.generation("jobs", "3")
    notifier.signal("jobs", "3")
    assert notifier.wait("jobs", "3", since, timeout=0)
    since = notifier.generation("jobs", "3")
    for payload in range(100, 1100):  # a long-lived worker: a signal per job it ran
        notifier.signal("jobs", str(payload))
    assert len(notifier._generations) <= 22  # bounded (the payloads and each channel's "")
    # Forgetting "3" may wake its waiter once; then a new signal of it is never missed.
    since = notifier.generation("jobs", "3")
    assert not notifier.wait("jobs", "3", since, timeout=0)
    notifier.signal("jobs", "3")
    assert notifier.wait("jobs", "3", since, timeout=0)
    # A waiter for any payload of the channel is woken by each.
    since = notifier.generation("jobs")
    notifier.signal("jobs", "4")
    assert notifier.wait("jobs", "", since, timeout=0)


def test_a_transactions_payloads_go_out_in_one_notify_per_channel_when_it_commits(registry):
    """On PostgreSQL one ``pg_notify`` per channel, in one statement just before the commit;
    a rolled back transaction's payloads go nowhere, and the cursor's next transaction sends
    its own."""
    notifier = notifier_for(registry)
    with statements(registry) as seen, registry.environment() as env:
        since = notifier.generation("jobs", "1"), notifier.generation("other", "9")
        notifier.send(env.cr, "jobs", 1)
        notifier.send_many(env.cr, "jobs", [2, 1, 3])
        notifier.send(env.cr, "other", 9)
        assert not [s for s in seen if "pg_notify" in s]  # nothing sent before the commit
        env.cr.rollback()
        assert not notifier.wait("jobs", "1", since[0], timeout=0)
        notifier.send(env.cr, "jobs", 1)
        notifier.send_many(env.cr, "jobs", [2, 3])
        notifier.send(env.cr, "other", 9)
        env["test.tag"].create({"name": "a commit"})
    assert notifier.wait("jobs", "1", since[0], timeout=0)
    assert notifier.wait("other", "9", since[1], timeout=0)
    notified = [s for s in seen if "pg_notify" in s]
    if registry.dialect == "postgresql":
        [statement] = notified
        assert statement.count("pg_notify(") == 2
    else:
        assert not notified


def test_a_notifier_is_woken_once_by_its_own_commit_and_by_others_notifications(registry, db_url):
    """Its own NOTIFY comes back to its listener, which drops it: its waiters were woken at
    the commit. Another notifier's (another process's) wakes them."""
    notifier = notifier_for(registry)
    notifier.listen("test_wakeup")
    time.sleep(0.2)  # the listener is up
    with registry.environment() as env:
        since = notifier.generation("test_wakeup", "5")
        notifier.send(env.cr, "test_wakeup", 5)
    assert notifier.wait("test_wakeup", "5", since, timeout=0)  # at the commit
    once = notifier.generation("test_wakeup", "5")
    assert not notifier.wait("test_wakeup", "5", once, timeout=1)  # and not again
    if registry.dialect != "postgresql":
        return
    since = notifier.generation("test_wakeup", "7")
    sender = subprocess.Popen([sys.executable, "-c", SENDER, db_url, str(TEST_ADDONS)], cwd=ROOT)
    try:
        assert notifier.wait("test_wakeup", "7", since, timeout=60)
    finally:
        assert sender.wait(timeout=60) == 0
