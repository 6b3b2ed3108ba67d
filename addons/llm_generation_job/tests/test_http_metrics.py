"""GET /metrics: only LLM managers scrape it; its gauges are the database's figures; its
counters and histograms count real attempts, in the database, and never go back when
``cleanup_old_jobs`` deletes the jobs they counted."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from addons.llm_generation_job.models.llm_generation_metric import (
    DURATION_BOUNDS,
    TTFT_BOUNDS,
    WAIT_BOUNDS,
)
from addons.llm_generation_job.store import JobStore

from .conftest import API_KEY, make_provider

# sample name and labels -> value
Samples = dict[tuple[str, frozenset], float]
HISTOGRAMS = {
    "llmjobs_time_to_first_token_seconds": TTFT_BOUNDS,
    "llmjobs_queue_wait_seconds": WAIT_BOUNDS,
    "llmjobs_job_duration_seconds": DURATION_BOUNDS,
}
# The families that must never go back (histogram samples start with the histogram's name).
COUNTED = ("llmjobs_attempts_total", "llmjobs_retries_total", "llmjobs_failures_total", *HISTOGRAMS)


def scrape(api, user: str = "manager") -> Samples:
    response = api.client(user).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def histogram(samples: Samples, name: str, queue: str) -> tuple[list[float], float, float]:
    """Its cumulative bucket counts (``+Inf`` last), count and sum."""
    bounds = [*map(str, HISTOGRAMS[name]), "+Inf"]
    buckets = [value(samples, f"{name}_bucket", queue=queue, le=le) for le in bounds]
    count = value(samples, f"{name}_count", queue=queue)
    return buckets, count, value(samples, f"{name}_sum", queue=queue)


def new_thread(env, provider, model, name: str = "Chat"):
    return env["llm.thread"].create(
        {"name": name, "provider_id": provider.id, "model_id": model.id}
    )


def new_job(env, provider, model):
    thread = new_thread(env, provider, model)  # one busy job per thread
    return env["llm.generation.job"].create({"thread_id": thread.id})


def test_only_llm_managers_may_scrape(registry, api):
    anonymous = api.client(None).get("/metrics")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    refused = api.client("alice").get("/metrics")
    assert refused.status_code == 403 and refused.json() == {
        "detail": "Only LLM managers may do this."
    }
    assert value(scrape(api), "llmjobs_workers_live") == 0


def test_gauges_are_the_queues_jobs_and_workers(registry, api):
    with registry.environment() as env:
        store = JobStore(env)
        paused, paused_model = make_provider(env, name="paused", api_key=API_KEY)
        busy, busy_model = make_provider(env, name="busy", api_key=API_KEY)
        queues = env["llm.generation.queue"]
        queues._get_or_create_queue(paused.id).write({"enabled": False, "max_concurrent_jobs": 3})
        queues._get_or_create_queue(busy.id).write({"max_concurrent_jobs": 1})
        waiting = [new_job(env, paused, paused_model) for _ in range(3)]
        for job in waiting:
            job.action_queue()
        waiting[0].write_where([], {"queued_at": dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)})
        waiting[2].action_cancel()
        new_job(env, paused, paused_model)  # a draft
        done = new_job(env, busy, busy_model)
        done.action_queue()
        store.start(done, "test")
        store.complete_job(done)
        running = new_job(env, busy, busy_model)
        running.action_queue()
        store.start(running, "test")  # the queue is full: warning
        workers = env["llm.generation.worker"]
        workers.register(slots=3, provider_ids=[], beat_seconds=60).beat(2, beat_seconds=60)
        workers.register(slots=5, provider_ids=[], beat_seconds=60).mark_stopped()
    samples = scrape(api)
    states = {"draft": 1, "queued": 2, "running": 0, "completed": 0, "failed": 0, "cancelled": 1}
    for state, count in states.items():
        assert value(samples, "llmjobs_jobs", queue="paused", state=state) == count
    busy_states = {**dict.fromkeys(states, 0), "running": 1, "completed": 1}
    for state, count in busy_states.items():
        assert value(samples, "llmjobs_jobs", queue="busy", state=state) == count
    expected = {
        "depth": (2, 0),
        "running": (0, 1),
        "limit": (3, 1),
        "enabled": (0, 1),
    }
    for gauge, (on_paused, on_busy) in expected.items():
        assert value(samples, f"llmjobs_queue_{gauge}", queue="paused") == on_paused
        assert value(samples, f"llmjobs_queue_{gauge}", queue="busy") == on_busy
    age = value(samples, "llmjobs_queue_oldest_queued_age_seconds", queue="paused")
    assert 3600 <= age < 3660
    assert value(samples, "llmjobs_queue_oldest_queued_age_seconds", queue="busy") == 0
    for health in ("healthy", "warning", "critical", "disabled"):
        assert value(samples, "llmjobs_queue_health", queue="paused", health=health) == (
            health == "disabled"
        )
        assert value(samples, "llmjobs_queue_health", queue="busy", health=health) == (
            health == "warning"
        )
    assert value(samples, "llmjobs_workers_live") == 1
    assert value(samples, "llmjobs_worker_slots") == 3
    assert value(samples, "llmjobs_worker_running_jobs") == 2
    assert value(samples, "llmjobs_attempts_total", queue="busy", outcome="completed") == 1
    assert value(samples, "llmjobs_attempts_total", queue="paused", outcome="completed") == 0


@pytest.fixture
def sim(registry, runner, openai_server):
    """``sim(prompt)`` generates a reply on a provider served by the simulator, through its
    queue and the runner of this process; a retryable failure is retried at once."""
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=openai_server.url, api_key=API_KEY)
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        queue.write({"retry_delay_minutes": 0})
        thread_id = new_thread(env, provider, model).id

    def generate(prompt: str) -> str:
        with registry.environment() as env:
            thread = env["llm.thread"].browse(thread_id)
            updates = list(thread.generate_response(prompt, use_queue=True))
        return updates[-1]["type"]

    generate.server = openai_server
    return generate


def run_jobs(sim) -> None:
    """Three completed jobs (one after a retryable failure, one slow to its first token) and
    one failed for good: five attempts, three of them streamed."""
    assert sim("hello") == "done"
    assert sim("[sim:status=400] bad") == "error"
    sim.server.push_fault(status=503)
    assert sim("again") == "done"
    assert sim("[sim:first_token_delay=0.3] slow") == "done"


def test_counters_and_histograms_count_the_attempts(registry, api, sim):
    run_jobs(sim)
    samples = scrape(api)
    outcomes = {"completed": 3, "failed": 2, "cancelled": 0, "lost": 0, "interrupted": 0}
    for outcome, count in outcomes.items():
        assert value(samples, "llmjobs_attempts_total", queue="sim", outcome=outcome) == count
    assert "running" not in {dict(labels).get("outcome") for _, labels in samples}
    assert value(samples, "llmjobs_retries_total", queue="sim") == 1
    assert value(samples, "llmjobs_failures_total", queue="sim", kind="permanent") == 1
    assert value(samples, "llmjobs_failures_total", queue="sim", kind="retryable") == 0
    assert value(samples, "llmjobs_jobs", queue="sim", state="completed") == 3
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].search([("state", "=", "completed")])
        streamed = jobs.mapped("attempt_ids").filtered("first_token_at")
        ttfts = [(a.first_token_at - a.started_at).total_seconds() for a in streamed]
        expected = {
            "llmjobs_time_to_first_token_seconds": ttfts,
            "llmjobs_queue_wait_seconds": jobs.mapped("queue_duration"),
            "llmjobs_job_duration_seconds": jobs.mapped("duration"),
        }
    assert len(ttfts) == 3  # one observation per attempt that streamed: not the failed ones
    assert max(ttfts) >= 0.3
    for name, observed in expected.items():
        buckets, count, total = histogram(samples, name, "sim")
        assert count == len(observed) == 3 and total == pytest.approx(sum(observed))
        assert buckets == sorted(buckets) and buckets[-1] == count
        for bound, bucket in zip(HISTOGRAMS[name], buckets, strict=False):
            assert bucket == sum(1 for seconds in observed if seconds <= bound)
    buckets, _, _ = histogram(samples, "llmjobs_time_to_first_token_seconds", "sim")
    assert buckets[TTFT_BOUNDS.index(0.25)] <= 2  # the slow one is above


def test_counters_never_go_back_when_old_jobs_are_deleted(registry, api, sim):
    run_jobs(sim)
    before = scrape(api)
    with registry.environment() as env:
        jobs = registry.metadata.tables["llm_generation_job"]
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        env.cr.execute(jobs.update().values(create_date=long_ago, completed_at=long_ago))
    with registry.environment() as env:
        assert env["llm.generation.job"].cleanup_old_jobs(days=7, batch_size=3) == 4
        assert not env["llm.generation.job.attempt"].search([])
        assert env["llm.generation.metric.total"].search_count([]) > 0
    after = scrape(api)
    assert value(after, "llmjobs_jobs", queue="sim", state="completed") == 0
    counted = {key: seen for key, seen in before.items() if key[0].startswith(COUNTED)}
    assert {key[0] for key in counted} >= {f"{name}_sum" for name in HISTOGRAMS}
    assert {key: after[key] for key in counted} == pytest.approx(counted)
    assert sim("one more") == "done"
    later = scrape(api)
    completed = {"queue": "sim", "outcome": "completed"}
    assert value(later, "llmjobs_attempts_total", **completed) == 4
    assert value(before, "llmjobs_attempts_total", **completed) == 3
    for name in HISTOGRAMS:
        buckets, count, total = histogram(later, name, "sim")
        old_buckets, old_count, old_total = histogram(before, name, "sim")
        assert count == old_count + 1 and total >= old_total
        assert all(new >= old for new, old in zip(buckets, old_buckets, strict=True))
        assert buckets == sorted(buckets) and buckets[-1] == count


def test_token_and_cost_counters_are_the_ledgers_and_outlive_the_cleanup(registry, api, sim):
    run_jobs(sim)
    with registry.environment() as env:
        env["llm.model"].search([]).write({"input_price": 2.0, "output_price": 8.0})
    assert sim("priced") == "done"
    samples = scrape(api)
    with registry.environment(readonly=True) as env:
        rows = env["llm.generation.usage"].search([])
        completion, prompt = (
            sum(rows.mapped("completion_tokens")),
            sum(rows.mapped("prompt_tokens")),
        )
        cost = sum(rows.mapped("cost"))
    assert completion > 0 and cost > 0
    assert value(samples, "llmjobs_tokens_total", queue="sim", kind="completion") == completion
    assert value(samples, "llmjobs_tokens_total", queue="sim", kind="prompt") == prompt
    assert value(samples, "llmjobs_cost_usd_total", queue="sim") == pytest.approx(cost)
    with registry.environment() as env:
        env["llm.generation.job"].cleanup_old_jobs(days=-1)
        assert not env["llm.generation.job"].search([])
    after = scrape(api)
    assert value(after, "llmjobs_tokens_total", queue="sim", kind="completion") == completion
    assert value(after, "llmjobs_cost_usd_total", queue="sim") == pytest.approx(cost)
