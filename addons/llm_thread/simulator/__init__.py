"""Loopback provider servers speaking the real OpenAI, Anthropic and Ollama protocols, with
deterministic replies, fault injection and stats: what tests, benchmarks and demos use
instead of real providers. OpenAI and Anthropic servers also run batch jobs (OpenAI Batch
with its files, Anthropic Message Batches) on a lazily computed clock, see ``batches``.

    with SimulatorServer("openai", tokens=20) as server:
        ...  # point a provider's api_base at server.url
        server.push_fault(status=429, retry_after=1)
        server.stats()["max_in_flight"]
"""

from .app import DIALECTS
from .replies import count_tokens, reply_chunks, reply_text
from .scenario import Scenario, parse_directives
from .server import SimulatorServer

PROTOCOLS = tuple(DIALECTS)

__all__ = [
    "PROTOCOLS",
    "Scenario",
    "SimulatorServer",
    "count_tokens",
    "parse_directives",
    "reply_chunks",
    "reply_text",
]
