"""Load on one machine: llmjobs against procrastinate + httpx doing the same work, side by
side in one run, against the same loopback simulator (a process of its own).

    .venv/bin/pip install -e '.[bench]'       # procrastinate, for the peer
    LLMJOBS_TEST_PG_URL=postgresql://user:pw@127.0.0.1/db .venv/bin/python bench/load.py

(a) 1-token jobs per second with 1 and 4 worker processes (16 jobs at once each):
    llmjobs, procrastinate + httpx (the task streams the reply and stores it once),
    procrastinate with a no-op task, and the floor (a bare SKIP LOCKED claim and complete);
(b) 200 and 1,000 paced streams at once on one worker (first token after 0.3 s, 200 tokens
    at 50 a second, about 4.3 s a reply): wall time, worker CPU, PostgreSQL CPU, failures;
    llmjobs also persists each reply as it streams (the stream log), the peer stores it once;
(c) enqueue to first token with an idle worker (an unpaced reply): p50, p95, p99;
(d) a worker's resident memory after 1,000 and after 10,000 jobs.

(a) to (c) run on SQLite too, for llmjobs (procrastinate needs PostgreSQL). ``--quick``
divides every count by 5. The machine is shared and noisy: compare the two sides of one
run, not runs with each other. bench/RESULTS.md keeps the latest figures.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: its modules must not shadow the stdlib's

from addons.llm_generation_job.store import BUSY  # noqa: E402
from bench import peer as peers  # noqa: E402
from core import Registry  # noqa: E402
from core.testing import postgres_base_url, postgres_schema_url  # noqa: E402

PACED = {"tokens": 200, "first_token_delay": 0.3, "token_delay": 0.02}
CLOCK = os.sysconf("SC_CLK_TCK")
LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent)) or "llmjobs"


# -- processes and their CPU ---------------------------------------------------------------
def serve(urls: multiprocessing.Queue, settings: dict) -> None:
    from addons.llm_thread.simulator import SimulatorServer

    SimulatorServer("openai", **settings).serve_forever(on_ready=urls.put)


@contextlib.contextmanager
def simulator(**settings) -> Iterator[str]:
    urls: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve, args=(urls, settings), daemon=True)
    process.start()
    try:
        yield urls.get(timeout=30)
    finally:
        process.terminate()
        process.join(timeout=10)


def cpu_seconds(pid: int, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        used += int(fields[13]) + int(fields[14])  # of reaped children
    return used / CLOCK


def postgres_cpu() -> float | None:
    """CPU of the PostgreSQL server: its postmaster, its live backends, the reaped ones."""
    pid_files = sorted(Path("/var/run/postgresql").glob("*.pid"))
    if not pid_files:
        return None
    postmaster = int(pid_files[0].read_text().split()[0])
    total = cpu_seconds(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLOCK
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def worker_log(folder: Path, side: str, number: int):
    return (folder / f"{side}-worker-{number}.log").open("ab")


def check_alive(workers: list[subprocess.Popen], folder: Path, side: str) -> None:
    """Stop the run, with the end of its log, when a worker process has exited."""
    for number, worker in enumerate(workers):
        if worker.poll() is not None:
            log = (folder / f"{side}-worker-{number}.log").read_text(errors="replace")
            raise RuntimeError(
                f"{side} worker {number} exited ({worker.returncode}):\n{log[-3000:]}"
            )


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        path = folder / f"bench-{time.monotonic_ns()}.db"
        yield f"sqlite:///{path}"
        return
    with postgres_schema_url(postgres_base_url()) as url:
        yield url


# -- llmjobs ---------------------------------------------------------------------------------
class Ours:
    """A database with a provider on the simulator, threads, and worker processes."""

    def __init__(self, url: str, api_base: str, folder: Path, limit: int):
        self.url, self.folder = url, folder
        self.registry = Registry(url, addons=["llm_generation_job"])
        self.workers: list[subprocess.Popen] = []
        with self.registry.environment() as env:
            provider = env["llm.provider"].create(
                {"name": "bench", "service": "openai", "api_base": api_base, "api_key": "sk"}
            )
            self.model_id = (
                env["llm.model"]
                .create({"name": "sim", "provider_id": provider.id, "default": True})
                .id
            )
            env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
                {"max_concurrent_jobs": limit, "retry_delay_minutes": 0}
            )
            self.provider_id = provider.id

    def start(self, count: int, concurrency: int) -> list[subprocess.Popen]:
        crons = self.folder / "no-crons.yaml"
        crons.write_text("[]\n")
        env = {
            **os.environ,
            "LLMJOBS_DB_URL": self.url,
            "LLMJOBS_CRON_FILE": str(crons),
            "LLMJOBS_WORKER_CONCURRENCY": str(concurrency),
        }
        started = [
            subprocess.Popen(
                [LLMJOBS, "worker"],
                env=env,
                cwd=self.folder,
                stderr=worker_log(self.folder, "llmjobs", n),
            )
            for n in range(len(self.workers), len(self.workers) + count)
        ]
        self.workers += started
        deadline = time.monotonic() + 60
        while True:
            with self.registry.environment(readonly=True) as env:
                if env["llm.generation.worker"].live_count(self.provider_id) >= len(self.workers):
                    return started
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)

    def run(self, jobs: int, prompt: str, timeout: float = 900) -> tuple[float, int]:
        """Queue ``jobs`` jobs at once (each on a thread of its own) and wait for them all;
        returns the seconds it took and how many did not complete."""
        with self.registry.environment() as env:
            threads = env["llm.thread"].create(
                [
                    {"name": f"t{n}", "provider_id": self.provider_id, "model_id": self.model_id}
                    for n in range(jobs)
                ]
            )
            created = env["llm.generation.job"].create(
                [{"thread_id": t.id, "generation_inputs": {"prompt": prompt}} for t in threads]
            )
            for job in created:
                job.action_queue()
            job_ids = created.ids
            start = time.perf_counter()
        # No list of ids: the jobs of a run are the newest, and the harness's own queries
        # must cost PostgreSQL as little as the peer's (one count).
        unfinished_domain = [("id", ">=", min(job_ids)), *BUSY]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.registry.environment(readonly=True) as env:
                unfinished = env["llm.generation.job"].search_count(unfinished_domain)
            if not unfinished:
                break
            check_alive(self.workers, self.folder, "llmjobs")
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        with self.registry.environment(readonly=True) as env:
            done = env["llm.generation.job"].search_count(
                [("id", "in", job_ids), ("state", "=", "completed")]
            )
        return elapsed, jobs - done

    def first_token_latencies(self, samples: int) -> list[float]:
        with self.registry.environment() as env:
            thread_id = (
                env["llm.thread"]
                .create(
                    {"name": "latency", "provider_id": self.provider_id, "model_id": self.model_id}
                )
                .id
            )
        timings = []
        for number in range(samples):
            with self.registry.environment() as env:
                thread = env["llm.thread"].browse(thread_id)
                start = time.perf_counter()
                for update in thread.generate_response(f"question {number}", use_queue=True):
                    if update["type"] == "message_chunk" and "seq" in update:
                        timings.append(time.perf_counter() - start)
                    if update["type"] in ("done", "error"):
                        break
        return timings

    def close(self) -> None:
        stop(self.workers)
        self.registry.close()


# -- the peers ------------------------------------------------------------------------------
class Peer:
    """procrastinate (or the floor) on a database of its own, in worker processes."""

    def __init__(self, url: str, folder: Path):
        self.conninfo, self.folder = url, folder
        self.env = {**os.environ, "PEER_CONNINFO": url}
        self.workers: list[subprocess.Popen] = []
        peers.prepare_procrastinate(url)

    def start(self, command: str, count: int, concurrency: int = 1) -> list[subprocess.Popen]:
        args = [sys.executable, "-m", "bench.peer", command]
        if command == "procrastinate":
            args += ["--concurrency", str(concurrency)]
        started = [
            subprocess.Popen(
                args, env=self.env, cwd=ROOT, stderr=worker_log(self.folder, "peer", n)
            )
            for n in range(len(self.workers), len(self.workers) + count)
        ]
        self.workers += started
        return started

    def run(self, task: str, jobs: list[dict], timeout: float = 900) -> tuple[float, int]:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            connection.execute("DELETE FROM procrastinate_jobs")
            start = time.perf_counter()
            peers.defer(self.conninfo, task, jobs)
            deadline = time.monotonic() + timeout
            while True:
                counts = peers.finished(connection)
                if sum(counts.values()) >= len(jobs) or time.monotonic() > deadline:
                    return time.perf_counter() - start, len(jobs) - counts.get("succeeded", 0)
                check_alive(self.workers, self.folder, "peer")
                time.sleep(0.02)

    def floor(self, jobs: int, workers: int) -> float:
        peers.prepare_floor(self.conninfo, jobs)
        start = time.perf_counter()
        processes = self.start("floor", workers)
        for process in processes:
            process.wait(timeout=300)
        return jobs / (time.perf_counter() - start)

    def close(self) -> None:
        stop(self.workers)


# -- the scenarios -------------------------------------------------------------------------
def one_token_jobs(kind: str, fast_url: str, folder: Path, jobs: int, results: dict) -> None:
    """Jobs a second (and failures), with the workers' CPU and PostgreSQL's a job (ms)."""

    def measured(workers, run, *args) -> tuple:
        seconds, worker_cpu, pg_cpu, failed = costs(workers, kind, run, *args)
        pg_ms = None if pg_cpu is None else pg_cpu / jobs * 1000
        return jobs / seconds, failed, worker_cpu / jobs * 1000, pg_ms

    for count in (1, 4):
        with database(kind, folder) as url:
            ours = Ours(url, fast_url, folder, limit=64)
            try:
                workers = ours.start(count, concurrency=16)
                ours.run(16, "warm-up")
                results[("a", kind, "llmjobs", count)] = measured(workers, ours.run, jobs, "x")
            finally:
                ours.close()
        if kind != "postgresql":
            continue
        with database(kind, folder) as url:
            peer = Peer(url, folder)
            try:
                workers = peer.start("procrastinate", count, concurrency=16)
                args = [{"url": fast_url, "prompt": "x"}] * jobs
                peer.run("generate", args[:16])
                results[("a", kind, "procrastinate + httpx", count)] = measured(
                    workers, peer.run, "generate", args
                )
                results[("a", kind, "procrastinate no-op", count)] = measured(
                    workers, peer.run, "noop", [{}] * jobs
                )
            finally:
                peer.close()
            floor = (peer.floor(jobs * 5, count), 0, None, None)
            results[("a", kind, "SKIP LOCKED floor", count)] = floor


def streams(kind: str, paced_url: str, folder: Path, counts: list[int], results: dict) -> None:
    prompt = "stream me"
    for count in counts:
        with database(kind, folder) as url:
            ours = Ours(url, paced_url, folder, limit=count)
            try:
                workers = ours.start(1, concurrency=count)
                results[("b", kind, "llmjobs", count)] = costs(
                    workers, kind, ours.run, count, prompt
                )
            finally:
                ours.close()
        if kind != "postgresql":
            continue
        with database(kind, folder) as url:
            peer = Peer(url, folder)
            try:
                workers = peer.start("procrastinate", 1, concurrency=count)
                time.sleep(2)  # the worker is up
                args = [{"url": paced_url, "prompt": prompt}] * count
                results[("b", kind, "procrastinate + httpx", count)] = costs(
                    workers, kind, peer.run, "generate", args
                )
            finally:
                peer.close()


def latency(kind: str, fast_url: str, folder: Path, samples: int, results: dict) -> None:
    with database(kind, folder) as url:
        ours = Ours(url, fast_url, folder, limit=8)
        try:
            ours.start(1, concurrency=8)
            ours.first_token_latencies(5)  # warm-up
            timings = sorted(ours.first_token_latencies(samples))
        finally:
            ours.close()
    quantiles = statistics.quantiles(timings, n=100)
    results[("c", kind)] = (quantiles[49], quantiles[94], quantiles[98])


def memory(fast_url: str, folder: Path, first: int, then: int, results: dict) -> None:
    with database("postgresql", folder) as url:
        ours = Ours(url, fast_url, folder, limit=16)
        try:
            [worker] = ours.start(1, concurrency=16)
            for _ in range(first // 1000 or 1):
                ours.run(min(first, 1000), "x")
            after_first = rss_mb(worker.pid)
            for _ in range((then - first) // 1000 or 1):
                ours.run(min(then - first, 1000), "x")
            results[("d",)] = (after_first, rss_mb(worker.pid))
        finally:
            ours.close()


def costs(workers: list[subprocess.Popen], kind: str, run, *args) -> tuple:
    """``run(*args)``'s (seconds, failures) with the workers' CPU and PostgreSQL's (None on
    SQLite, or when the server's processes cannot be read) over it."""
    before = sum(cpu_seconds(worker.pid) for worker in workers)
    pg_before = postgres_cpu() if kind == "postgresql" else None
    seconds, failed = run(*args)
    worker_cpu = sum(cpu_seconds(worker.pid) for worker in workers) - before
    pg_after = postgres_cpu() if pg_before is not None else None
    pg_cpu = None if pg_after is None or pg_before is None else pg_after - pg_before
    return seconds, worker_cpu, pg_cpu, failed


# -- report ---------------------------------------------------------------------------------
class Results(dict):
    """The figures of a run; each goes to stderr as it is measured (a long run shows where
    it is)."""

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        print("measured", *key, value, file=sys.stderr, flush=True)


def report(results: dict) -> None:
    def fmt(value, unit=""):
        return "n/a" if value is None else f"{value:.2f}{unit}"

    print("\n(a) 1-token jobs per second (failures); CPU a job")
    for kind in ("postgresql", "sqlite"):
        for workers in (1, 4):
            rows = {k[2]: v for k, v in results.items() if k[:2] == ("a", kind) and k[3] == workers}
            if not rows:
                continue
            ours = rows.get("llmjobs", (0, 0))[0]
            line = ", ".join(
                f"{name} {rate:.0f} ({failed})" for name, (rate, failed, *_) in rows.items()
            )
            peer = rows.get("procrastinate + httpx")
            ratio = f"  -> llmjobs / procrastinate+httpx = {ours / peer[0]:.2f}x" if peer else ""
            print(f"  {kind}, {workers} worker(s): {line}{ratio}")
            for name, (_, _, worker_ms, pg_ms) in rows.items():
                if worker_ms is not None:
                    cpu = f"workers' CPU {worker_ms:.2f} ms, PostgreSQL's {fmt(pg_ms)} ms"
                    print(f"      {name}: {cpu} a job")
    print("\n(b) paced streams at once on one worker: wall, worker CPU, PostgreSQL CPU (s)")
    for kind in ("postgresql", "sqlite"):
        for key, value in results.items():
            if key[:2] == ("b", kind):
                (_, _, name, count), (wall, cpu, pg, failed) = key, value
                print(
                    f"  {kind}, {count} streams, {name}: wall {wall:.1f}, worker CPU {cpu:.1f}, "
                    f"PostgreSQL CPU {fmt(pg)}, failed {failed}"
                )
        for count in sorted({k[3] for k in results if k[:2] == ("b", kind)}):
            ours = results.get(("b", kind, "llmjobs", count))
            peer = results.get(("b", kind, "procrastinate + httpx", count))
            if ours and peer:
                print(
                    f"    -> {count} streams: wall {ours[0] / peer[0]:.2f}x, worker CPU "
                    f"{ours[1] / peer[1]:.2f}x the peer's"
                )
    print("\n(c) enqueue to first token, idle worker: p50 / p95 / p99 ms")
    for kind in ("postgresql", "sqlite"):
        if ("c", kind) in results:
            p50, p95, p99 = (value * 1000 for value in results[("c", kind)])
            print(f"  {kind}: {p50:.1f} / {p95:.1f} / {p99:.1f}")
    if ("d",) in results:
        first, then = results[("d",)]
        print(
            f"\n(d) worker RSS: {first:.1f} MB after the first jobs, {then:.1f} MB after all "
            f"({then / first:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every count divided by 5")
    parser.add_argument("--only", default="abcd", help="the scenarios to run (e.g. 'bc')")
    args = parser.parse_args()
    if not postgres_base_url():
        sys.exit("Set LLMJOBS_TEST_PG_URL to a PostgreSQL database (the role creates schemas).")
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        sys.exit("The peer needs procrastinate: .venv/bin/pip install -e '.[bench]'")
    scale = 5 if args.quick else 1
    results = Results()
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator(tokens=1) as fast_url,
        simulator(**PACED) as paced_url,
    ):
        folder = Path(tmp)
        for kind in ("postgresql", "sqlite"):
            if "a" in args.only:
                one_token_jobs(kind, fast_url, folder, 400 // scale, results)
            if "b" in args.only:
                streams(kind, paced_url, folder, [200 // scale, 1000 // scale], results)
            if "c" in args.only:
                latency(kind, fast_url, folder, 100 // scale, results)
        if "d" in args.only:
            memory(fast_url, folder, 1000 // scale, 10000 // scale, results)
    report(results)


if __name__ == "__main__":
    main()
