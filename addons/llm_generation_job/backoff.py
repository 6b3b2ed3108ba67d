"""How long a failed job waits before its automatic retry.

Exponential from the queue's ``retry_delay_minutes`` (base, 2x base, 4x base, ...), with
"equal jitter" (a random point in the upper half of each step) so that jobs failed together do
not all come back together, capped at six hours; a provider's ``Retry-After`` is a floor.
"""

from __future__ import annotations

import random

MAX_DELAY_SECONDS = 6 * 3600


def retry_delay(
    retry_count: int,
    base_minutes: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``retry_count + 1``."""
    step = min(base_minutes * 60 * 2**retry_count, MAX_DELAY_SECONDS)
    delay = step / 2 + (rng or random).uniform(0, step / 2)
    return max(delay, retry_after or 0.0)
