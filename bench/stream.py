"""Direct generation against a bare httpx stream: time to first token and total time.

Both read the same 1,000-token reply from one loopback OpenAI simulator, interleaved and
repeated, each on a persistent httpx client that reuses its connection. The baseline is a
plain SSE read (``iter_lines`` and ``json.loads``, no database); the measured side is
``thread.generate_response()``: the start transaction (lock, user message, conversation,
reply placeholder), the stream through the wire layer, the end transaction (the reply
completed, the lock released), on SQLite unless ``--db-url``. Prints medians, ratios and the
absolute overhead.

The simulator runs in a process of its own: in this one it would compete for the GIL with
the code being measured (and its 5 ms switch interval would dominate the timings).

Two runs:

- *paced*: the simulator waits ``--first-token-delay`` (100 ms) before the first token and
  ``--token-delay`` (2 ms, 500 tokens/s) between tokens: a provider faster than any we
  target. The targets apply to this run: time to first token <= 1.2x, total <= 1.1x.
- *unpaced*: the simulator sends as fast as loopback allows (a 1,000-token reply in ~25 ms,
  a first token in ~3 ms, which no provider approaches). The ratio means little there; the
  overhead column is the framework's own cost (its transactions, per-token parsing) and is
  what to watch for regressions.

    .venv/bin/python bench/stream.py [--tokens 1000] [--repeat 15] [--db-url URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: bench/queue.py would shadow the stdlib's queue

from core import Registry  # noqa: E402

Timing = tuple[float, float]  # (time to first token, total), seconds


def serve(
    urls: multiprocessing.Queue, tokens: int, first_token_delay: float, token_delay: float
) -> None:
    """The simulator's process: serve until terminated."""
    from addons.llm_thread.simulator import SimulatorServer

    server = SimulatorServer(
        "openai", tokens=tokens, first_token_delay=first_token_delay, token_delay=token_delay
    )
    server.serve_forever(on_ready=urls.put)


def bare_stream(client: httpx.Client, url: str, prompt: str) -> Timing:
    start = time.perf_counter()
    first = None
    body = {
        "model": "sim",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": prompt}],
    }
    with client.stream(
        "POST", f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def generate(registry: Registry, thread_id: int, prompt: str) -> Timing:
    start = time.perf_counter()
    first = None
    with registry.environment() as env:
        for update in env["llm.thread"].browse(thread_id).generate_response(prompt):
            if first is None and update["type"] == "message_chunk":
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def measure(db_url: str, url: str, repeat: int) -> tuple[list[Timing], list[Timing]]:
    """(generate_response timings, bare httpx timings), interleaved runs."""
    registry = Registry(db_url, addons=["llm_thread"])
    try:
        with registry.environment() as env:
            provider = env["llm.provider"].create(
                {"name": f"sim {url}", "service": "openai", "api_base": url, "api_key": "k"}
            )
            model = env["llm.model"].create({"name": "sim", "provider_id": provider.id})
            thread_ids = (
                env["llm.thread"]
                .create(
                    [
                        {"name": f"t{i}", "provider_id": provider.id, "model_id": model.id}
                        for i in range(repeat + 1)
                    ]
                )
                .ids
            )
        with httpx.Client(timeout=60) as client:  # persistent, like the providers' client
            generate(registry, thread_ids[-1], "warm-up")
            bare_stream(client, url, "warm-up")
            ours, baseline = [], []
            for number in range(repeat):
                prompt = f"question {number}"  # same prompt, same reply for both sides
                baseline.append(bare_stream(client, url, prompt))
                ours.append(generate(registry, thread_ids[number], prompt))
    finally:
        registry.close()
    return ours, baseline


TARGETS = {"time to first token": 1.2, "total": 1.1}


def report(title: str, ours: list[Timing], baseline: list[Timing], *, judged: bool) -> None:
    """Print the medians, ratios and overheads; with ``judged``, the ratios against TARGETS."""
    print(f"\n{title}, median of {len(ours)} runs")
    print(f"{'':<22}{'generate_response':>18}{'bare httpx':>12}{'ratio':>8}{'overhead':>11}")
    for index, label in enumerate(TARGETS):
        mine = statistics.median(r[index] for r in ours)
        base = statistics.median(r[index] for r in baseline)
        verdict = ""
        if judged:
            met = "met" if mine / base <= TARGETS[label] else "NOT met"
            verdict = f"   target <= {TARGETS[label]}x: {met}"
        print(
            f"{label:<22}{mine * 1000:>16.1f}ms{base * 1000:>10.1f}ms{mine / base:>7.2f}x"
            f"{(mine - base) * 1000:>9.1f}ms{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--db-url", help="database to use (default: a temporary SQLite file)")
    parser.add_argument(
        "--first-token-delay",
        type=float,
        default=0.1,
        help="paced run: seconds before the first token",
    )
    parser.add_argument(
        "--token-delay", type=float, default=0.002, help="paced run: seconds between tokens"
    )
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    runs = (
        (
            f"paced ({args.first_token_delay * 1000:g} ms to the first token, "
            f"{args.token_delay * 1000:g} ms between tokens)",
            args.first_token_delay,
            args.token_delay,
        ),
        ("unpaced (the overhead column is the framework's cost)", 0.0, 0.0),
    )
    with tempfile.TemporaryDirectory() as folder:
        db_url = args.db_url or f"sqlite:///{folder}/bench.db"
        for number, (title, first_token_delay, token_delay) in enumerate(runs):
            urls = spawn.Queue()
            simulator = spawn.Process(
                target=serve, args=(urls, args.tokens, first_token_delay, token_delay), daemon=True
            )
            simulator.start()
            try:
                ours, baseline = measure(db_url, urls.get(timeout=30), args.repeat)
            finally:
                simulator.terminate()
                simulator.join()
            report(f"{args.tokens}-token reply, {title}", ours, baseline, judged=number == 0)


if __name__ == "__main__":
    main()
