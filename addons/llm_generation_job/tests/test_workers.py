"""Worker rows: live while they beat, dead when the beats stop or the worker stopped, cleaned
up a week later."""

import datetime as dt

from .conftest import make_provider


def test_live_dead_and_stopped_workers(env):
    provider, _model = make_provider(env)
    other, _model = make_provider(env, name="other")
    workers = env["llm.generation.worker"]
    everywhere = workers.register(slots=8, provider_ids=[], beat_seconds=2)
    dedicated = workers.register(slots=2, provider_ids=[other.id], beat_seconds=2)
    assert everywhere.is_live and (everywhere.slots, everywhere.running_jobs) == (8, 0)
    assert [workers.live_count(p.id) for p in (provider, other)] == [1, 2]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    everywhere.write({"alive_until": past})  # its beats stopped: killed or frozen
    assert not everywhere.is_live
    assert [workers.live_count(p.id) for p in (provider, other)] == [0, 1]
    everywhere.beat(running_jobs=3, beat_seconds=2)  # it was only slow
    assert everywhere.is_live and everywhere.running_jobs == 3
    dedicated.mark_stopped()
    assert not dedicated.is_live and dedicated.stopped_at
    assert workers.search([("is_live", "=", True)]) == everywhere
    assert workers.search([("is_live", "=", False)]) == dedicated


def test_rows_of_workers_gone_for_a_week_are_cleaned_up(env):
    workers = env["llm.generation.worker"]
    recent, old, live = (
        workers.register(slots=1, provider_ids=[], beat_seconds=2) for _ in range(3)
    )
    week_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    recent.mark_stopped()
    old.write({"last_beat_at": week_ago, "alive_until": week_ago})
    assert workers.cleanup_stopped(days=7) == 1
    assert not old.exists() and recent.exists() and live.exists()
