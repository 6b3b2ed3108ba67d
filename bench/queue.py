"""Queue throughput and latency on PostgreSQL with real worker processes.

- jobs/second for no-op generations (a one-token reply from the loopback simulator) with
  1 and then 4 ``llmjobs worker`` processes, and the ratio between the two;
- enqueue-to-first-token latency: from ``thread.generate_response(..., use_queue=True)``
  to its first ``message_chunk``, with idle workers (p50, p95). Target: well under 50 ms.

    LLMJOBS_TEST_PG_URL=postgresql://user:pw@127.0.0.1/db .venv/bin/python bench/queue.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: bench/queue.py would shadow the stdlib's queue

from addons.llm_generation_job.follow import wait_finished  # noqa: E402
from addons.llm_thread.simulator import SimulatorServer  # noqa: E402
from core import Registry  # noqa: E402
from core.testing import postgres_base_url, postgres_schema_url  # noqa: E402


def start_workers(url: str, count: int, folder: Path) -> list[subprocess.Popen]:
    empty_crons = folder / "cron.yaml"
    empty_crons.write_text("[]\n")
    env = {
        **os.environ,
        "LLMJOBS_DB_URL": url,
        "LLMJOBS_CRON_FILE": str(empty_crons),
        "LLMJOBS_WORKER_CONCURRENCY": "8",
    }
    llmjobs = shutil.which("llmjobs", path=str(Path(sys.executable).parent)) or "llmjobs"
    return [subprocess.Popen([llmjobs, "worker"], env=env, cwd=ROOT) for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)


def setup(registry: Registry, api_base: str, threads: int) -> tuple[int, list[int]]:
    with registry.environment() as env:
        provider = env["llm.provider"].create(
            {"name": "bench", "service": "openai", "api_base": api_base, "api_key": "sk"}
        )
        model = env["llm.model"].create(
            {"name": "sim", "provider_id": provider.id, "model_use": "chat", "default": True}
        )
        env["llm.generation.queue"]._get_or_create_queue(provider.id).max_concurrent_jobs = 64
        thread_ids = (
            env["llm.thread"]
            .create(
                [
                    {"name": f"t{i}", "provider_id": provider.id, "model_id": model.id}
                    for i in range(threads)
                ]
            )
            .ids
        )
        return provider.id, thread_ids


def throughput(registry: Registry, thread_ids: list[int], jobs: int) -> float:
    with registry.environment() as env:
        created = env["llm.generation.job"].create(
            [
                {"thread_id": thread_ids[i % len(thread_ids)], "generation_inputs": {"prompt": "x"}}
                for i in range(jobs)
            ]
        )
        start = time.perf_counter()
        for job in created:
            job.action_queue()
        job_ids = created.ids
    wait_finished(registry, job_ids, timeout=300, poll=0.05)
    return jobs / (time.perf_counter() - start)


def latency(registry: Registry, thread_id: int, samples: int) -> list[float]:
    timings = []
    for number in range(samples):
        with registry.environment() as env:
            thread = env["llm.thread"].browse(thread_id)
            start = time.perf_counter()
            for update in thread.generate_response(f"question {number}", use_queue=True):
                if update["type"] == "message_chunk":
                    timings.append(time.perf_counter() - start)
                    break
        with registry.environment(readonly=True) as env:
            job_id = env["llm.thread"].browse(thread_id).generation_job_ids.ids
        wait_finished(registry, job_id, timeout=300, poll=0.05)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    base = postgres_base_url()
    if not base:
        sys.exit("Set LLMJOBS_TEST_PG_URL to a PostgreSQL database (the role creates schemas).")
    results = {}
    with ExitStack() as stack:
        simulator = stack.enter_context(SimulatorServer("openai", tokens=1))
        for workers in (1, 4):
            url = stack.enter_context(postgres_schema_url(base))
            registry = Registry(url)
            _provider, thread_ids = setup(registry, simulator.url, threads=args.jobs)
            folder = Path(stack.enter_context(__import__("tempfile").TemporaryDirectory()))
            processes = start_workers(url, workers, folder)
            try:
                throughput(registry, thread_ids[:8], 8)  # warm-up: workers are up and idle
                results[workers] = throughput(registry, thread_ids, args.jobs)
                if workers == 1:
                    timings = latency(registry, thread_ids[0], args.samples)
            finally:
                stop_workers(processes)
                registry.close()
    print(f"\nno-op generations on PostgreSQL, {args.jobs} jobs")
    print(f"  1 worker:   {results[1]:8.1f} jobs/s")
    print(f"  4 workers:  {results[4]:8.1f} jobs/s   ({results[4] / results[1]:.2f}x)")
    quantiles = statistics.quantiles(timings, n=20)
    print(f"\nenqueue to first token, {len(timings)} samples, idle worker")
    print(f"  p50: {statistics.median(timings) * 1000:6.1f} ms")
    print(f"  p95: {quantiles[18] * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
