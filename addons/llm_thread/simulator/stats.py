"""The simulator's counters, read from other threads (``server.stats()``) and other processes
(``GET /_sim/stats``) to check what clients did: how many generation requests, how many at
once, how they ended."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

REQUESTS = "requests"
# How a generation ended; a generation that ends otherwise was abandoned by its client.
COMPLETED, FAULT, DISCONNECT = "completed", "faults", "disconnects"
BATCHES, BATCH_REQUESTS = "batches", "batch_requests"  # batches created, requests in them
RATE_LIMITED = "rate_limited"  # generation requests refused over the server's limits (429)
# Tokens served: a generation's prompt once it produced its first token (or, not streamed,
# its reply), and each token it sent.
PROMPT_TOKENS, COMPLETION_TOKENS = "prompt_tokens", "completion_tokens"


@dataclass
class Outcome:
    """Set by the code producing a generation; left as DISCONNECT when it stopped early."""

    counter: str = DISCONNECT


class Stats:
    """``requests``: generation requests received (any outcome, including refusals);
    ``connections``: the TCP connections they came on (a client that pools connections
    sends many requests on one);
    ``in_flight`` / ``max_in_flight``: generations running now / at most at once since the
    last reset; ``completed``, ``disconnects`` (the client went away mid-generation) and
    ``faults`` (injected errors, cuts and malformed streams); ``rate_limited``: generation
    requests refused over the server's rpm or in-flight limit; ``batches`` created and the
    ``batch_requests`` in them; ``prompt_tokens`` and ``completion_tokens`` served (streamed,
    not streamed, in batches and background responses: the usage a provider bills)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._counts = self._zeros()
        self._peers: set[tuple[str, int]] = set()

    def _zeros(self) -> dict[str, int]:
        return {
            REQUESTS: 0,
            "connections": 0,
            "max_in_flight": self._in_flight,
            COMPLETED: 0,
            DISCONNECT: 0,
            FAULT: 0,
            RATE_LIMITED: 0,
            BATCHES: 0,
            BATCH_REQUESTS: 0,
            PROMPT_TOKENS: 0,
            COMPLETION_TOKENS: 0,
        }

    def count(self, counter: str, by: int = 1) -> None:
        with self._lock:
            self._counts[counter] += by

    def served(self, prompt: int, completion: int) -> None:
        """Count tokens served (see the class docstring)."""
        with self._lock:
            self._counts[PROMPT_TOKENS] += prompt
            self._counts[COMPLETION_TOKENS] += completion

    def request(self, peer: tuple[str, int] | None) -> None:
        """Count a generation request from ``peer`` (the client's address and port)."""
        with self._lock:
            self._counts[REQUESTS] += 1
            if peer is not None and peer not in self._peers:
                self._peers.add(peer)
                self._counts["connections"] += 1

    @contextmanager
    def generation(self, outcome: Outcome) -> Iterator[Outcome]:
        """Count one generation in flight for the duration of the block, then its outcome."""
        with self._lock:
            self._in_flight += 1
            self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)
        try:
            yield outcome
        finally:
            with self._lock:
                self._in_flight -= 1
                self._counts[outcome.counter] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "in_flight": self._in_flight}

    def reset(self) -> None:
        """Zero the counters; generations still running stay in flight."""
        with self._lock:
            self._counts = self._zeros()
            self._peers.clear()
