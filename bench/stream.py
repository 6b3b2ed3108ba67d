"""Direct generation against a bare httpx stream: time to first token and total time.

Both read a 1,000-token reply from the same loopback OpenAI simulator, interleaved and
repeated, each on a persistent httpx client; the baseline is a plain SSE read with no
database, the measured side is
``thread.generate_response()`` (posting the user message, the reply placeholder, the stream,
completing the reply, all on SQLite). Prints medians and ratios. Targets: time to first token
<= 1.2x, total <= 1.1x.

    .venv/bin/python bench/stream.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: bench/queue.py would shadow the stdlib's queue

from addons.llm_thread.simulator import SimulatorServer  # noqa: E402
from core import Registry  # noqa: E402


def bare_stream(client: httpx.Client, url: str, prompt: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    body = {"model": "sim", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}
    with client.stream(
        "POST", f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get(
                    "content"):
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def generate(registry: Registry, thread_id: int, prompt: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with registry.environment() as env:
        for update in env["llm.thread"].browse(thread_id).generate_response(prompt):
            if first is None and update["type"] == "message_chunk":
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, SimulatorServer(
        "openai", tokens=args.tokens
    ) as simulator:
        registry = Registry(f"sqlite:///{folder}/bench.db", addons=["llm_thread"])
        with registry.environment() as env:
            provider = env["llm.provider"].create({"name": "sim", "service": "openai",
                                                   "api_base": simulator.url, "api_key": "k"})
            model = env["llm.model"].create({"name": "sim", "provider_id": provider.id})
            thread_ids = env["llm.thread"].create([
                {"name": f"t{i}", "provider_id": provider.id, "model_id": model.id}
                for i in range(args.repeat + 1)
            ]).ids
        client = httpx.Client(timeout=60)  # persistent, like the provider's shared client
        generate(registry, thread_ids[-1], "warm-up")
        bare_stream(client, simulator.url, "warm-up")
        ours, baseline = [], []
        for number in range(args.repeat):
            prompt = f"question {number}"  # same prompt, same reply for both sides
            baseline.append(bare_stream(client, simulator.url, prompt))
            ours.append(generate(registry, thread_ids[number], prompt))
        registry.close()
    print(f"\n{args.tokens}-token reply, median of {args.repeat} runs")
    print(f"{'':<22}{'generate_response':>18}{'bare httpx':>12}{'ratio':>8}")
    for index, label in ((0, "time to first token"), (1, "total")):
        mine = statistics.median(r[index] for r in ours)
        base = statistics.median(r[index] for r in baseline)
        print(f"{label:<22}{mine * 1000:>16.1f}ms{base * 1000:>10.1f}ms{mine / base:>7.2f}x")


if __name__ == "__main__":
    main()
