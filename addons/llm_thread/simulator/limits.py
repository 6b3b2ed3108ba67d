"""Request limits like a provider's: at most ``rpm_limit`` generation requests accepted in
any 60 seconds (a sliding window over the times of accepted requests) and at most
``max_in_flight`` generations running at once. What clients shared by many workers must
respect: a request over either limit is refused (the app answers the protocol's 429 with a
Retry-After), and every answer says how much of the window is left (the dialect writes it
in the provider's own headers, see ``Dialect.rate_limit_headers``).

Every accepted request's epoch time is also recorded (``times()``, cleared by ``clear``) so a
test can check from outside that no window ever held more than the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

WINDOW_SECONDS = 60.0


class Keep(Enum):
    """``configure``'s default: leave that limit as it is (None means "no limit")."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class WindowState:
    """The requests limit as a provider reports it: the limit, what is left of it now, and
    seconds until the window is empty again (the limit "fully replenished")."""

    limit: int
    remaining: int
    reset_seconds: float
    now: float  # epoch seconds the state was taken at (Anthropic's reset is a moment)


class Admission:
    """A generation request let in: it holds one of the ``max_in_flight`` slots until
    ``release()`` (idempotent: every way a generation ends may call it)."""

    def __init__(self, limits: Limits, window: WindowState | None):
        self.window = window
        self._limits = limits
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limits._release()


@dataclass(frozen=True)
class Refusal:
    """A generation request over a limit: ``retry_after`` whole seconds (at least 1) until it
    could be accepted; ``window`` for the rate-limit headers (None without an rpm_limit)."""

    retry_after: int
    window: WindowState | None


def _checked(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"Simulator limit '{name}' must be a positive integer or None.")
    return value


class Limits:
    """The limits, the window of accepted requests and the generations in flight; used from
    the server's event loop and read from other threads, hence the lock. ``clock`` gives
    epoch seconds."""

    def __init__(
        self,
        rpm_limit: int | None = None,
        max_in_flight: int | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.rpm_limit = _checked("rpm_limit", rpm_limit)
        self.max_in_flight = _checked("max_in_flight", max_in_flight)
        self._clock = clock
        self._lock = threading.Lock()
        self._window: deque[float] = deque()  # accepted in the last WINDOW_SECONDS, oldest first
        self._times: list[float] = []  # accepted since the last clear
        self._in_flight = 0

    def configure(
        self, *, rpm_limit: int | Keep | None = KEEP, max_in_flight: int | Keep | None = KEEP
    ) -> None:
        """Change the limits now (None: no limit). The window keeps the requests already
        accepted, as a provider changing a tier would: lowering the rpm limit below them
        refuses requests until enough of them are a minute old."""
        with self._lock:
            if rpm_limit is not KEEP:
                self.rpm_limit = _checked("rpm_limit", rpm_limit)
            if max_in_flight is not KEEP:
                self.max_in_flight = _checked("max_in_flight", max_in_flight)

    def admit(self) -> Admission | Refusal:
        """Let a generation request in (recording its time) or refuse it."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            rpm = self.rpm_limit
            if rpm is not None and len(self._window) >= rpm:
                # A slot frees when the window holds one request fewer than the limit: when
                # the request at len - rpm (the oldest, unless the limit was lowered) expires.
                frees_at = self._window[len(self._window) - rpm] + WINDOW_SECONDS
                return Refusal(max(1, math.ceil(frees_at - now)), self._state(now))
            if self.max_in_flight is not None and self._in_flight >= self.max_in_flight:
                return Refusal(1, self._state(now))
            self._window.append(now)
            self._times.append(now)
            self._in_flight += 1
            return Admission(self, self._state(now))

    def times(self) -> list[float]:
        """Epoch seconds of the requests accepted since the last ``clear``, in order."""
        with self._lock:
            return list(self._times)

    def clear(self) -> None:
        """Forget the recorded times (with the stats' reset); the window and the generations
        in flight stay: they are the provider's state, not an observation of it."""
        with self._lock:
            self._times.clear()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _expire(self, now: float) -> None:
        while self._window and self._window[0] <= now - WINDOW_SECONDS:
            self._window.popleft()

    def _state(self, now: float) -> WindowState | None:
        if self.rpm_limit is None:
            return None
        reset = self._window[-1] + WINDOW_SECONDS - now if self._window else 0.0
        remaining = max(0, self.rpm_limit - len(self._window))
        return WindowState(self.rpm_limit, remaining, max(0.0, reset), now)
