"""``SimulatorServer``: a simulated provider served by uvicorn on a real socket, in a
background thread (``start``/``stop``, or as a context manager) or in the foreground
(``serve_forever``, for the CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn

from .app import DIALECTS, SimulatedCut, SimulatorState, build_app
from .batches import BatchClock
from .limits import KEEP, Keep, Limits
from .scenario import Scenario

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class _HideSimulatedCuts(logging.Filter):
    """uvicorn logs the exception that aborts a response; for a simulated cut that is the
    point, not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BaseExceptionGroup):
            _, rest = error.split(SimulatedCut)
            return rest is not None
        return not isinstance(error, SimulatedCut)


_CUT_FILTER = _HideSimulatedCuts()


class SimulatorServer:
    """A loopback provider speaking ``protocol`` ("openai", "anthropic" or "ollama").

    ``url`` is what to configure as the provider's api_base (``http://127.0.0.1:PORT/v1``
    for OpenAI and Anthropic, ``http://127.0.0.1:PORT`` for Ollama). Replies are
    ``tokens`` words long, paced by ``first_token_delay`` and ``token_delay``; with an
    ``api_key``, requests without it get the protocol's 401. Faults: ``push_fault(...)``
    or ``[sim:...]`` directives in the last user message (see ``scenario``). Batches (OpenAI
    and Anthropic) work a request every ``batch_request_seconds`` after
    ``batch_validation_seconds`` and expire after ``batch_window_seconds`` (see
    ``batches``). Limits, as a provider's shared by all its clients (see ``limits``): with
    ``rpm_limit``, at most that many generation requests accepted in any 60 seconds; with
    ``max_in_flight``, at most that many generations at once; a request over either gets
    the protocol's 429 with a Retry-After."""

    def __init__(
        self,
        protocol: str = "openai",
        *,
        tokens: int = 20,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        api_key: str | None = None,
        batch_request_seconds: float = 0.0,
        batch_window_seconds: float = 86400.0,
        batch_validation_seconds: float = 0.0,
        rpm_limit: int | None = None,
        max_in_flight: int | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ):
        if protocol not in DIALECTS:
            raise ValueError(f"Unknown protocol {protocol!r} (known: {', '.join(DIALECTS)}).")
        self.protocol = protocol
        self.host = host
        self._dialect = DIALECTS[protocol]
        self._requested_port = port
        self._state = SimulatorState(
            Scenario(tokens=tokens, token_delay=token_delay, first_token_delay=first_token_delay),
            api_key,
            BatchClock(batch_request_seconds, batch_window_seconds, batch_validation_seconds),
            Limits(rpm_limit, max_in_flight),
        )
        self.app = build_app(self._dialect, self._state)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("The simulator is not running.")
        return self._socket.getsockname()[1]

    @property
    def root_url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:PORT`` (Anthropic SDK's base_url)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The provider's api_base: the root plus the protocol's version prefix."""
        return self.root_url + self._dialect.base_path

    # -- running -----------------------------------------------------------------------

    def start(self) -> Self:
        """Serve in a daemon thread; return once the server accepts connections."""
        server = self._prepare()
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [self._socket]},
            name=f"simulator-{self.protocol}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The {self.protocol} simulator failed to start.")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop at once, dropping open connections."""
        if self._server is not None:
            self._server.should_exit = self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self._release()

    def serve_forever(self, on_ready: Callable[[str], Any] | None = None) -> None:
        """Serve in this thread until SIGINT or SIGTERM (uvicorn's graceful shutdown, then the
        signal is raised again: KeyboardInterrupt for Ctrl-C, a plain return where SIGINT was
        ignored when the process started). ``on_ready(url)`` is called once the socket
        listens."""
        server = self._prepare()
        if on_ready is not None:
            on_ready(self.url)
        try:
            server.run(sockets=[self._socket])
        finally:
            self._release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare(self) -> uvicorn.Server:
        """Bind and listen (so the URL works from now on; connections wait in the backlog
        until uvicorn accepts them) and make the uvicorn server."""
        if self._socket is not None:
            raise RuntimeError("The simulator is already running.")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY on the accepted connections
        # only for a socket that says it is TCP, and without it Nagle's algorithm holds a
        # response's small writes back for the client's delayed ACK (40 ms a request).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        logging.getLogger("uvicorn.error").addFilter(_CUT_FILTER)
        self._server = uvicorn.Server(config)
        return self._server

    def _release(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = self._server = self._thread = None

    # -- control and observation -------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """requests, in_flight, max_in_flight, completed, disconnects, faults, rate_limited,
        batches, batch_requests, prompt_tokens, completion_tokens (served)."""
        return self._state.stats.snapshot()

    def wait_idle(self, timeout: float = 5.0) -> dict[str, int]:
        """The stats once no generation is in flight. A client reads the end of a stream a
        moment before the server counts it as ended: wait for this before checking counts."""
        deadline = time.monotonic() + timeout
        while (stats := self.stats())["in_flight"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{stats['in_flight']} generation(s) still in flight.")
            time.sleep(0.005)
        return stats

    def reset_stats(self) -> None:
        """Zero the stats and forget the recorded request times (``request_times``); the
        limits' window stays (see ``configure_limits``)."""
        self._state.stats.reset()
        self._state.limits.clear()

    def request_times(self) -> list[float]:
        """Epoch seconds at which each generation request was accepted (not refused by a
        limit, the key or a bad body) since the last ``reset_stats``, in order; what ``GET
        /_sim/requests`` answers as ``{"times": [...]}``."""
        return self._state.limits.times()

    def configure_limits(
        self, *, rpm_limit: int | Keep | None = KEEP, max_in_flight: int | Keep | None = KEEP
    ) -> None:
        """Change the limits from now on (None: no limit; a limit not given stays). The
        window keeps the requests accepted in the last minute, as a provider's would."""
        self._state.limits.configure(rpm_limit=rpm_limit, max_in_flight=max_in_flight)

    def push_fault(self, **settings: Any) -> None:
        """Make the next generation request follow these Scenario settings, e.g.
        ``push_fault(status=429, retry_after=1)`` or ``push_fault(cut_after=3)``; each call
        applies to one request, in order."""
        self._state.push_fault(**settings)

    def clear_faults(self) -> None:
        self._state.clear_faults()

    def configure_batches(self, **settings: float) -> None:
        """Other ``request_seconds``, ``window_seconds`` or ``validation_seconds`` for the
        batches created from now on."""
        self._state.batches.configure(**settings)

    def batches(self) -> list[dict]:
        """Every batch now: id, status, total and done requests."""
        return self._state.batches.snapshot()
