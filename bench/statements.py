"""Where a job's statements go: 1-token jobs through a job runner in this process (the
simulator in a process of its own), every statement counted by the thread that ran it.

    LLMJOBS_TEST_PG_URL=postgresql://user:pw@127.0.0.1/db .venv/bin/python bench/statements.py

Prints, per job: the caller's statements (queueing it: ``generate_response``'s transaction),
the worker's dispatcher (claim and preparation) and writer (stream log, completion), and the
worker's CPU time; then the statements by kind. Counts are exact and repeatable; times are
this machine's of the moment (bench/load.py compares with the peers).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: its modules must not shadow the stdlib's

from addons.llm_generation_job.runner import JobRunner  # noqa: E402
from bench.load import database, simulator  # noqa: E402
from core import Registry  # noqa: E402


class Counter:
    """Statements by thread and by kind (their first words and table)."""

    def __init__(self, registry: Registry):
        self.by_thread: collections.Counter[str] = collections.Counter()
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.engine = registry.engine

    def __call__(self, conn, cursor, statement: str, *args) -> None:
        self.by_thread[threading.current_thread().name] += 1
        words = statement.split()
        table = next((w for w in words[1:4] if w.startswith("llm_") or w.startswith("sa_")), "")
        if words[0] == "SELECT" and " FROM " in statement:
            table = statement.split(" FROM ", 1)[1].split()[0]
        self.by_kind[f"{words[0]} {table}".strip()] += 1

    @contextlib.contextmanager
    def counting(self):
        sa.event.listen(self.engine, "before_cursor_execute", self)
        try:
            yield self
        finally:
            sa.event.remove(self.engine, "before_cursor_execute", self)


def run(url: str, api_base: str, jobs: int, concurrency: int) -> None:
    registry = Registry(url, addons=["llm_generation_job"])
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "bench", "service": "openai", "api_base": api_base, "api_key": "sk"}
        )
        model = env["llm.model"].create({"name": "sim", "provider_id": provider.id})
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            {"max_concurrent_jobs": 64}
        )
        values = {"provider_id": provider.id, "model_id": model.id}
        threads = env["llm.thread"].create([{"name": f"t{n}", **values} for n in range(jobs)])
        thread_ids = threads.ids
    counter = Counter(registry)
    with counter.counting():
        for thread_id in thread_ids:  # the caller's side: as generate_response queues
            with registry.environment() as env:
                env["llm.thread"].browse(thread_id)._queue_generation("x", {})
    queued = sum(counter.by_thread.values())
    counter.by_thread.clear()
    counter.by_kind.clear()
    runner = JobRunner(registry, concurrency=concurrency)
    used = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with counter.counting():
        runner.start()
        while True:
            with registry.environment(readonly=True) as env:
                if not env["llm.generation.job"].search_count([("state", "!=", "completed")]):
                    break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        runner.stop()
    ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ended.ru_utime + ended.ru_stime - used.ru_utime - used.ru_stime
    registry.close()
    threads_seen = {name: count for name, count in counter.by_thread.items()}
    print(f"{registry.dialect}, {jobs} 1-token jobs, concurrency {concurrency}:")
    print(f"  queueing (the caller): {queued / jobs:.1f} statements a job")
    for name in ("llmjobs-dispatch", "llmjobs-writer"):
        print(f"  {name}: {threads_seen.get(name, 0) / jobs:.1f} statements a job")
    print(f"  {jobs / elapsed:.0f} jobs/s, {cpu / jobs * 1000:.1f} ms of CPU a job (this process)")
    for kind, count in counter.by_kind.most_common(20):
        print(f"    {count / jobs:5.2f}  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kinds", default="postgresql,sqlite")
    args = parser.parse_args()
    with simulator(tokens=1) as api_base, tempfile.TemporaryDirectory() as folder:
        for kind in args.kinds.split(","):
            with database(kind, Path(folder)) as url:
                run(url, api_base, args.jobs, args.concurrency)


if __name__ == "__main__":
    main()
