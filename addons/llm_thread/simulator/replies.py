"""The simulator's reply text: a pure function of the prompt and a length, so that a test
can compute what a stream must contain."""

from __future__ import annotations

import hashlib
import random

VOCABULARY = (
    "the",
    "a",
    "queue",
    "job",
    "worker",
    "reply",
    "token",
    "stream",
    "provider",
    "model",
    "thread",
    "message",
    "lease",
    "retry",
    "cron",
    "record",
    "field",
    "domain",
    "addon",
    "river",
    "stone",
    "cloud",
    "garden",
    "lamp",
    "window",
    "harbor",
    "signal",
    "paper",
    "quiet",
    "bright",
    "slow",
    "steady",
    "early",
    "late",
    "small",
    "large",
    "open",
    "closed",
    "runs",
    "waits",
    "answers",
    "writes",
    "reads",
    "counts",
    "holds",
    "sends",
    "finds",
    "keeps",
    "and",
    "or",
    "then",
    "while",
    "because",
    "after",
    "before",
    "under",
    "over",
    "with",
)


def reply_chunks(prompt: str, tokens: int) -> list[str]:
    """``tokens`` chunks of one word and a space, drawn by a PRNG seeded from ``prompt``."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return [f"{rng.choice(VOCABULARY)} " for _ in range(tokens)]


def reply_text(prompt: str, tokens: int) -> str:
    return "".join(reply_chunks(prompt, tokens))


def count_tokens(text: str) -> int:
    """The simulator's token count of a prompt text: its words."""
    return len(text.split())
