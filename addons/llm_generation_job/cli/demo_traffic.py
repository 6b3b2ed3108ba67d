"""The demo's trickle of traffic: a new conversation every few seconds, queued as a job of the
demo login, and one line per job that finished, failed or waits for its retry.

With the simulator, replies vary in length and pace, and some requests meet a fault pushed to
the simulator for them: a 503 with Retry-After and a stream cut midway (both retried, then
completed) and a 400 (failed for good), so the dashboard shows retries, failures grouped by
error and success rates below 100 %.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Iterator

from ..store import ACTIVE_STATES

DEMO_LOGIN = "demo"

QUESTIONS = (
    "Summarise the benefits of leases over heartbeats.",
    "What does exactly-once delivery mean for an LLM reply?",
    "Explain back-pressure in one paragraph.",
    "How would you resume a stream after a crash?",
    "Write a haiku about queues.",
    "When is a retry safe?",
    "What should a dashboard for LLM jobs show first?",
)
# (every n-th job, the fault pushed to the simulator for it)
FAULTS = (
    (7, {"status": 400, "message": "This model's maximum context length is 8192 tokens."}),
    (5, {"status": 503, "retry_after": 4, "message": "The server is overloaded."}),
    (11, {"cut_after": 6}),
)


def demo_user(env):
    """The demo's login, an LLM manager (created on first run)."""
    users = env["res.users"]
    user = users.search([("login", "=", DEMO_LOGIN)], limit=1)
    if not user:
        manager = env.ref("llm_thread.group_llm_manager").id
        user = users.create({"login": DEMO_LOGIN, "name": "Demo operator", "groups_id": [manager]})
    return user


class Trickle:
    def __init__(self, registry, model_id: int, simulator=None, rng: random.Random | None = None):
        self.registry = registry
        self.model_id = model_id
        self.simulator = simulator
        self.rng = rng or random.Random()
        self.numbers = itertools.count(1)
        self.watched: dict[int, tuple[str, int]] = {}  # job id -> (state, retry count) seen

    def send(self) -> int:
        """Queue the next job (as the demo login); returns its id."""
        number = next(self.numbers)
        if self.simulator is not None:
            self.simulator.push_fault(**self._scenario(number))
        with self.registry.environment() as env:
            user = demo_user(env)
            model = env["llm.model"].browse(self.model_id)
            thread = (
                env["llm.thread"]
                .with_user(user)
                .create(
                    {
                        "name": f"Trickle {number}",
                        "provider_id": model.provider_id.id,
                        "model_id": model.id,
                    }
                )
            )
            job = (
                env["llm.generation.job"]
                .with_user(user)
                .create(
                    {
                        "thread_id": thread.id,
                        "priority": number % 3,
                        "generation_inputs": {"prompt": self.rng.choice(QUESTIONS)},
                    }
                )
            )
            job.action_queue()
            self.watched[job.id] = ("queued", 0)
            return job.id

    def _scenario(self, number: int) -> dict:
        for every, fault in FAULTS:
            if number % every == 0:
                return fault
        return {
            "tokens": self.rng.randint(20, 120),
            "first_token_delay": round(self.rng.uniform(0.1, 0.6), 2),
            "token_delay": round(self.rng.uniform(0.02, 0.06), 3),
        }

    def news(self) -> Iterator[str]:
        """A line for each watched job that finished or failed since the last look."""
        if not self.watched:
            return
        with self.registry.environment(readonly=True) as env:
            jobs = env["llm.generation.job"].browse(list(self.watched))
            for job in jobs:
                seen = (job.state, job.retry_count)
                if seen == self.watched[job.id]:
                    continue
                self.watched[job.id] = seen
                line = _describe(job)
                if line:
                    yield line
                if job.state not in ACTIVE_STATES and not job.next_retry_at:
                    del self.watched[job.id]


def _describe(job) -> str | None:
    clock = dt.datetime.now().strftime("%H:%M:%S")
    if job.state == "completed":
        reply = job.output_message_id
        return (
            f"{clock}  job {job.id:>5}  completed in {job.duration:.1f} s, "
            f"{reply.completion_tokens or 0} tokens"
            + (f" (after {_retries(job.retry_count)})" if job.retry_count else "")
        )
    if job.state == "failed":
        error = (job.error_message or "").splitlines()[0] if job.error_message else ""
        if job.next_retry_at:
            return f"{clock}  job {job.id:>5}  failed, retry scheduled: {error}"
        return f"{clock}  job {job.id:>5}  failed for good: {error}"
    if job.state == "cancelled":
        return f"{clock}  job {job.id:>5}  cancelled"
    return None


def _retries(count: int) -> str:
    return f"{count} retry" if count == 1 else f"{count} retries"
