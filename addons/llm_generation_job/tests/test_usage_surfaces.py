"""Usage where people look, on both databases: ``GET /api/usage`` as Alice, Bob and a manager
(each user their own usage, the manager everyone's), grouped by day, user, provider, model,
thread and job; ``llmjobs usage`` (its table and ``--json``); and a job's cost in its detail
and in ``llmjobs jobs show``. The usage is made by real jobs: a job runner in this process
streams them from loopback simulators, one stream cut midway (its attempt's tokens are
estimated, then retried); what every surface shows is checked against the ledger's rows."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest

from addons.llm_generation_job.controllers.usage import format_cost
from addons.llm_thread.tests.command_line import Llmjobs, table

from .conftest import make_provider
from .test_usage_ledger import queue_jobs

ALPHA_PRICES = {"input_price": 3.0, "output_price": 15.0, "cached_input_price": 0.3}
BETA_PRICES = {"input_price": 1.0, "output_price": 2.0}
COUNTED = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost")


@dataclass
class Spent:
    """What the ``spent`` fixture made: ids by name, and the simulators' served tokens."""

    providers: dict[str, int]
    models: dict[str, int]
    threads: dict[str, list[int]]  # user name -> their thread ids
    jobs: dict[str, list[int]]  # user name -> their job ids


def _provider(env, server, name: str, prices: dict) -> tuple[int, int]:
    provider, model = make_provider(env, api_base=server.url, name=name)
    model.write(prices)
    env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
        {"max_concurrent_jobs": 8, "retry_delay_minutes": 0}
    )
    return provider.id, model.id


@pytest.fixture
def spent(registry, users, make_simulator, runner) -> Spent:
    """Providers 'alpha' and 'beta' (priced models, each on a simulator of its own); Alice's
    jobs: two on alpha, one on beta; Bob's: one on each. Beta's first stream is cut after
    two tokens (an estimated attempt, retried at once). All of them finished."""
    alpha_server = make_simulator("openai", tokens=7)
    beta_server = make_simulator("openai", tokens=4)
    beta_server.push_fault(cut_after=2)
    with registry.environment() as env:
        alpha, alpha_model = _provider(env, alpha_server, "alpha", ALPHA_PRICES)
        beta, beta_model = _provider(env, beta_server, "beta", BETA_PRICES)
        plan = {"alice": [alpha, alpha, beta], "bob": [alpha, beta]}
        models = {alpha: alpha_model, beta: beta_model}
        threads = {
            name: env["llm.thread"]
            .create(
                [
                    {
                        "name": f"{name}'s thread {index}",
                        "user_id": users[name],
                        "provider_id": provider,
                        "model_id": models[provider],
                    }
                    for index, provider in enumerate(providers)
                ]
            )
            .ids
            for name, providers in plan.items()
        }
    jobs = {name: queue_jobs(registry, users[name], ids) for name, ids in threads.items()}
    wait_completed(registry, [job for ids in jobs.values() for job in ids])
    return Spent(
        providers={"alpha": alpha, "beta": beta},
        models={"alpha": alpha_model, "beta": beta_model},
        threads=threads,
        jobs=jobs,
    )


def wait_completed(registry, job_ids: list[int], timeout: float = 30.0) -> None:
    """Until every job completed (the cut one fails first, then waits for its retry)."""
    deadline = time.monotonic() + timeout
    while True:
        with registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"].browse(job_ids)
            states = dict(zip(job_ids, jobs.mapped("state"), strict=True))
        if set(states.values()) == {"completed"}:
            return
        assert time.monotonic() < deadline, f"not all completed: {states}"
        time.sleep(0.05)


def ledger(registry, user_id: int | None = None) -> list[dict]:
    """The ledger's rows (a user's, or all), read as the superuser: the truth to compare."""
    domain = [("user_id", "=", user_id)] if user_id else []
    with registry.environment(readonly=True) as env:
        rows = env["llm.generation.usage"].search(domain)
        return [
            {
                "day": row.ended_at.astimezone(dt.UTC).date().isoformat(),
                "user": row.user_id.id,
                "provider": row.provider_id.id,
                "model": row.model_id.id,
                "thread": row.thread_id.id,
                "job": row.job_id.id,
                "estimated": row.estimated,
                **{name: row[name] for name in COUNTED},
            }
            for row in rows
        ]


def expected(rows: list[dict], by: str) -> dict:
    """The sums per group that the report must show."""
    groups: dict = defaultdict(lambda: dict.fromkeys((*COUNTED, "attempts", "estimated"), 0))
    for row in rows:
        group = groups[row[by]]
        group["attempts"] += 1
        group["estimated"] += row["estimated"]
        for name in COUNTED:
            group[name] += row[name]
    return dict(groups)


def shown(report: dict) -> dict:
    """The report's groups in the shape of ``expected``."""
    return {
        group["key"]: {
            **{name: group[name] for name in COUNTED},
            "attempts": group["attempts"],
            "estimated": group["estimated_attempts"],
        }
        for group in report["groups"]
    }


def assert_matches(report: dict, rows: list[dict], by: str) -> None:
    want, got = expected(rows, by), shown(report)
    assert got.keys() == want.keys(), (got, want)
    for key, counts in want.items():
        assert got[key] == {**counts, "cost": pytest.approx(counts["cost"])}, key
    totals = report["totals"]
    assert totals["attempts"] == len(rows) > 0
    assert totals["completion_tokens"] == sum(row["completion_tokens"] for row in rows)
    assert totals["prompt_tokens"] == sum(row["prompt_tokens"] for row in rows)
    assert totals["cost"] == pytest.approx(sum(row["cost"] for row in rows))
    assert totals["estimated_attempts"] == sum(row["estimated"] for row in rows)


def test_each_user_sees_their_own_usage_and_a_manager_everyones(api, spent, registry, users):
    everyone = ledger(registry)
    assert {row["job"] for row in everyone} == {j for ids in spent.jobs.values() for j in ids}
    assert sum(row["estimated"] for row in everyone) == 1  # the cut stream's attempt
    reported = [row for row in everyone if not row["estimated"]]
    assert sum(row["completion_tokens"] for row in reported) == 3 * 7 + 2 * 4
    assert all(row["cost"] > 0 for row in everyone if row["completion_tokens"])

    for name in ("alice", "bob"):
        answer = api.client(name).get("/api/usage", params={"by": "user"})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert [group["label"] for group in report["groups"]] == [name.capitalize()]
        assert_matches(report, ledger(registry, users[name]), "user")

    report = api.client("manager").get("/api/usage", params={"by": "user"}).json()
    assert_matches(report, everyone, "user")
    labels = {group["key"]: group["label"] for group in report["groups"]}
    assert labels == {users["alice"]: "Alice", users["bob"]: "Bob"}
    # The most expensive first.
    costs = [group["cost"] for group in report["groups"]]
    assert costs == sorted(costs, reverse=True)

    # Another user's usage is not there to filter for; a manager filters by user.
    assert (
        api.client("alice").get("/api/usage", params={"user_id": users["bob"]}).json()["groups"]
        == []
    )
    bobs = api.client("manager").get("/api/usage", params={"user_id": users["bob"], "by": "job"})
    assert_matches(bobs.json(), ledger(registry, users["bob"]), "job")


@pytest.mark.parametrize("by", ["day", "provider", "model", "thread", "job"])
def test_usage_groups_add_up_to_the_ledger(api, spent, registry, users, by):
    report = api.client("manager").get("/api/usage", params={"by": by}).json()
    assert report["by"] == by
    assert_matches(report, ledger(registry), by)
    alices = api.client("alice").get("/api/usage", params={"by": by}).json()
    assert_matches(alices, ledger(registry, users["alice"]), by)
    labels = {group["key"]: group["label"] for group in report["groups"]}
    if by == "provider":
        assert labels == {spent.providers["alpha"]: "alpha", spent.providers["beta"]: "beta"}
        # Alice's usage by provider: her own tokens on each, never Bob's.
        alpha = next(g for g in alices["groups"] if g["key"] == spent.providers["alpha"])
        assert alpha["attempts"] == 2 and alpha["completion_tokens"] == 2 * 7
    if by == "model":
        assert labels == {
            spent.models["alpha"]: "sim-model (alpha)",
            spent.models["beta"]: "sim-model (beta)",
        }
    if by == "day":
        today = dt.datetime.now(dt.UTC).date().isoformat()
        assert list(labels) == [today] and labels[today] == today
    if by == "thread":
        assert set(labels) == {t for ids in spent.threads.values() for t in ids}
        assert {group["key"] for group in alices["groups"]} == set(spent.threads["alice"])
        assert labels[spent.threads["bob"][0]] == "bob's thread 0"


def test_the_period_and_the_provider_filter(api, spent, registry):
    manager = api.client("manager")
    default = manager.get("/api/usage").json()
    since = dt.datetime.fromisoformat(default["since"])
    until = dt.datetime.fromisoformat(default["until"])
    assert until - since == dt.timedelta(days=30)
    assert abs(until - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    before = manager.get("/api/usage", params={"until": "2020-01-01T00:00:00"}).json()
    assert before["groups"] == [] and before["totals"]["attempts"] == 0
    assert before["until"] == "2020-01-01T00:00:00Z"  # no zone: UTC
    assert before["since"] == "2019-12-02T00:00:00Z"
    hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    recent = manager.get("/api/usage", params={"since": hour_ago}).json()
    assert recent["totals"]["attempts"] == len(ledger(registry))

    alpha = spent.providers["alpha"]
    only = manager.get("/api/usage", params={"provider_id": alpha, "by": "provider"}).json()
    assert [group["key"] for group in only["groups"]] == [alpha]
    assert_matches(only, [row for row in ledger(registry) if row["provider"] == alpha], "provider")


def test_bad_input_is_a_422_that_says_what_is_allowed(api, spent):
    alice = api.client("alice")
    bad = alice.get("/api/usage", params={"by": "week"})
    assert bad.status_code == 422
    [error] = bad.json()["errors"]
    assert error["field"] == "query.by"
    for allowed in ("day", "user", "provider", "model", "thread", "job"):
        assert f"'{allowed}'" in error["message"], error
    empty = alice.get(
        "/api/usage", params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    )
    assert empty.status_code == 422
    assert "since (2026-02-01T00:00:00+00:00) must be before until" in empty.json()["detail"]
    not_a_date = alice.get("/api/usage", params={"since": "yesterday"})
    assert not_a_date.status_code == 422
    assert not_a_date.json()["errors"][0]["field"] == "query.since"
    assert api.client(None).get("/api/usage").status_code == 401


def test_a_jobs_detail_shows_what_each_attempt_cost(api, spent, registry):
    with registry.environment(readonly=True) as env:
        estimated = env["llm.generation.usage"].search([("estimated", "=", True)])
        job_id, user_id = estimated.job_id.id, estimated.user_id.id
        rows = env["llm.generation.usage"].search([("job_id", "=", job_id)])
        by_attempt = {
            row.attempt_id.number: (row.prompt_tokens, row.completion_tokens, row.cost)
            for row in rows
        }
    owner = next(name for name, ids in spent.jobs.items() if job_id in ids)
    assert user_id  # the cut stream's job is a user's, on beta
    detail = api.client(owner).get(f"/api/jobs/{job_id}").json()
    cut, retried = detail["attempts"]
    assert (cut["outcome"], cut["estimated"]) == ("failed", True)
    assert (retried["outcome"], retried["estimated"]) == ("completed", False)
    for attempt in detail["attempts"]:
        tokens = (attempt["prompt_tokens"], attempt["completion_tokens"], attempt["cost"])
        assert tokens == pytest.approx(by_attempt[attempt["number"]])
    assert retried["completion_tokens"] == 4
    assert retried["cost"] == pytest.approx(
        (retried["prompt_tokens"] * 1.0 + retried["completion_tokens"] * 2.0) / 1e6
    )
    usage = detail["usage"]
    assert usage["estimated"] is True and usage["priced"] is True
    assert usage["completion_tokens"] == cut["completion_tokens"] + 4
    assert usage["cost"] == pytest.approx(cut["cost"] + retried["cost"])

    other = spent.jobs["alice"][0]
    plain = api.client("manager").get(f"/api/jobs/{other}").json()
    [attempt] = plain["attempts"]
    assert attempt["estimated"] is False and attempt["completion_tokens"] == 7
    assert plain["usage"]["cost"] == pytest.approx(attempt["cost"]) and attempt["cost"] > 0
    assert api.client("bob").get(f"/api/jobs/{other}").status_code == 404


@pytest.fixture
def cli(db_url, tmp_path, registry) -> Llmjobs:
    return Llmjobs(db_url, tmp_path)


def test_the_usage_command_prints_the_report_as_a_table_and_as_json(cli, spent, registry, api):
    printed = cli.run("usage", "--by", "provider")
    assert printed.returncode == 0, printed.stderr
    title, rest = printed.stdout.split("\n", 1)
    assert title.startswith("Usage from ") and title.endswith(" UTC, by provider")
    rows = {row["Provider"]: row for row in table(rest)}
    assert list(rows) == ["alpha", "beta", "Total"]  # the most expensive first
    want = expected(ledger(registry), "provider")
    for name in ("alpha", "beta"):
        counts = want[spent.providers[name]]
        row = rows[name]
        assert row["ID"] == str(spent.providers[name])
        assert int(row["Attempts"]) == counts["attempts"]
        assert int(row["Completion tokens"]) == counts["completion_tokens"]
        assert int(row["Prompt tokens"]) == counts["prompt_tokens"]
        assert row["Cost (USD)"] == format_cost(counts["cost"])
    assert rows["beta"]["Estimated"] == "1" and rows["alpha"]["Estimated"] == "-"
    assert int(rows["Total"]["Attempts"]) == len(ledger(registry))

    as_json = cli.run("usage", "--by", "model", "--json", "--since", "1h")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["by"] == "model"
    assert_matches(report, ledger(registry), "model")
    # What the manager's API answers for the same period.
    params = {"by": "model", "since": report["since"], "until": report["until"]}
    answered = api.client("manager").get("/api/usage", params=params).json()
    for moment in ("since", "until"):
        assert dt.datetime.fromisoformat(answered.pop(moment)) == dt.datetime.fromisoformat(
            report.pop(moment)
        )
    assert answered == report

    only = json.loads(cli.run("usage", "--provider", "beta", "--json").stdout)
    beta = spent.providers["beta"]
    assert_matches(only, [row for row in ledger(registry) if row["provider"] == beta], "day")
    of_alice = json.loads(cli.run("usage", "--by", "user", "--user", "alice", "--json").stdout)
    assert [group["label"] for group in of_alice["groups"]] == ["Alice"]

    unknown = cli.run("usage", "--provider", "nope")
    assert unknown.returncode == 1
    assert "No provider is named 'nope'" in unknown.stderr and "'alpha', 'beta'" in unknown.stderr
    bad = cli.run("usage", "--by", "week")
    assert bad.returncode == 2 and "'day', 'user', 'provider', 'model', 'thread', 'job'" in (
        bad.stderr
    )
    backwards = cli.run("usage", "--since", "2026-02-01", "--until", "2026-01-01")
    assert backwards.returncode == 2 and "must be before until" in backwards.stderr
    nothing = cli.run("usage", "--until", "2020-01-01")
    assert nothing.returncode == 0 and nothing.stdout.strip().endswith("No usage in this period.")


def test_jobs_show_prints_what_the_job_cost(cli, spent, registry):
    job_id = spent.jobs["alice"][0]
    with registry.environment(readonly=True) as env:
        [row] = env["llm.generation.usage"].search([("job_id", "=", job_id)])
        prompt, cost = row.prompt_tokens, row.cost
    shown_job = cli.run("jobs", "show", str(job_id))
    assert shown_job.returncode == 0, shown_job.stderr
    fields, attempts = shown_job.stdout.split("\n\n")
    record = dict(
        (label.strip(), value.strip())
        for label, value in (line.split(":", 1) for line in fields.splitlines()[1:])
    )
    assert record["Usage"] == f"{prompt} tokens in, 7 out, finish: stop, cost {format_cost(cost)}"
    [attempt] = table("\n".join(attempts.splitlines()[1:]))
    assert attempt["Cost (USD)"] == format_cost(cost) and attempt["Tokens in/out"] == f"{prompt}/7"


def test_costs_read_as_dollars():
    assert format_cost(0.000135) == "$0.000135"
    assert format_cost(0.25) == "$0.250000"
    assert format_cost(1234.5) == "$1,234.50"
    assert format_cost(0.0) == "$0" and format_cost(None) == "-"
    assert format_cost(4e-9) == "< $0.000001"
