"""The simulator's Starlette app, the same for every protocol: it checks the API key, picks
the request's scenario, answers with an injected error or paces out the dialect's reply, and
keeps the stats. A generation request over the server's limits (``limits``) gets the
protocol's 429 instead. ``GET /_sim/stats`` reads the stats, ``GET /_sim/requests`` the times
of the accepted generation requests, and ``POST /_sim/reset`` zeroes both (queued faults and
the limits' window stay). The batch endpoints (``batches``) share its API key check and
scenarios: a batched request gets the reply or error the chat endpoint would give."""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .anthropic_api import AnthropicDialect
from .batches import BatchBook, BatchClock, batch_routes
from .dialect import ChatRequest, Dialect, Generation, default_message
from .limits import Admission, Limits, WindowState
from .ollama_api import OllamaDialect
from .openai_api import OpenAIDialect
from .responses import response_routes
from .scenario import Scenario
from .stats import COMPLETED, FAULT, RATE_LIMITED, Outcome, Stats

DIALECTS: dict[str, Dialect] = {
    dialect.name: dialect for dialect in (OpenAIDialect(), AnthropicDialect(), OllamaDialect())
}


class SimulatedCut(Exception):
    """Raised from a stream's body to make the server drop the connection mid-response."""


class SimulatorState:
    """What the app's requests share with the thread that owns the server: the defaults, the
    API key, the queue of scripted faults, the stats, the limits and the batches."""

    def __init__(
        self,
        defaults: Scenario,
        api_key: str | None = None,
        batches: BatchClock | None = None,
        limits: Limits | None = None,
    ):
        self.defaults = defaults
        self.api_key = api_key
        self.batches = BatchBook(batches or BatchClock())
        self.stats = Stats()
        self.limits = limits or Limits()
        self._faults: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()

    def push_fault(self, **settings: Any) -> None:
        """Queue Scenario settings for the next generation request (one request each)."""
        self.defaults.updated(**settings)  # reject bad settings now, not in a request
        with self._lock:
            self._faults.append(settings)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def refusal(self, dialect: Dialect, request: Request) -> Response | None:
        """The 401 for a request without the right key, if the server has one."""
        given = dialect.given_key(request.headers)
        if self.api_key is None or (
            given is not None and hmac.compare_digest(given.encode(), self.api_key.encode())
        ):
            return None
        return JSONResponse(dialect.unauthorized(given), status_code=401)

    def next_scenario(self, prompt: str) -> Scenario:
        with self._lock:
            queued = self._faults.popleft() if self._faults else {}
        return self.defaults.updated(**queued).with_directives(prompt)


def build_app(dialect: Dialect, state: SimulatorState) -> Starlette:
    def error(
        status: int,
        message: str,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        headers = dict(headers or {})
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        return JSONResponse(dialect.error(status, message), status_code=status, headers=headers)

    def limit_headers(window: WindowState | None) -> dict[str, str]:
        return {} if window is None else dialect.rate_limit_headers(window)

    def refusal(request: Request) -> Response | None:
        return state.refusal(dialect, request)

    async def chat(request: Request) -> Response:
        state.stats.request(tuple(request.client) if request.client else None)
        refused = refusal(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return error(400, "The request body is not valid JSON.")
        try:
            chat_request = dialect.parse(body)
        except ValueError as exc:  # InvalidRequest
            return error(400, str(exc))
        # Limits before the scenario: a refused request must not use up a queued fault.
        admission = state.limits.admit()
        if not isinstance(admission, Admission):
            state.stats.count(RATE_LIMITED)
            return error(
                429, default_message(429), admission.retry_after, limit_headers(admission.window)
            )
        try:
            return await generate(chat_request, admission)
        except BaseException:
            admission.release()
            raise

    async def generate(chat_request: ChatRequest, admission: Admission) -> Response:
        """The answer to an admitted request; its slot is released when the generation ends
        (for a stream, when its body does)."""
        headers = limit_headers(admission.window)
        try:
            scenario = state.next_scenario(chat_request.prompt)
        except ValueError as exc:  # a bad directive or queued fault
            admission.release()
            return error(400, str(exc), headers=headers)
        if scenario.status is not None:
            admission.release()
            state.stats.count(FAULT)
            return error(
                scenario.status,
                scenario.message or default_message(scenario.status),
                scenario.retry_after,
                headers,
            )
        generation = Generation.plan(chat_request, scenario, dialect.id_prefix)
        if chat_request.stream:
            return GenerationStream(dialect, generation, state.stats, headers, admission.release)
        try:
            with state.stats.generation(Outcome()) as outcome:
                await asyncio.sleep(generation.duration)
                outcome.counter = COMPLETED
        finally:
            admission.release()
        state.stats.served(generation.request.prompt_tokens, generation.completion_tokens)
        return JSONResponse(dialect.complete(generation), headers=headers)

    async def models(request: Request) -> Response:
        return refusal(request) or JSONResponse(dialect.models())

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats.snapshot())

    async def requests(request: Request) -> Response:
        return JSONResponse({"times": state.limits.times()})

    async def reset(request: Request) -> Response:
        state.stats.reset()
        state.limits.clear()
        return JSONResponse(state.stats.snapshot())

    return Starlette(
        routes=[
            Route(dialect.chat_path, chat, methods=["POST"]),
            Route(dialect.models_path, models, methods=["GET"]),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/requests", requests, methods=["GET"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            *batch_routes(dialect, state),
            *response_routes(dialect, state),
        ]
    )


class GenerationStream(StreamingResponse):
    """A streamed reply, counted in flight until it ends: completed, faulted, or abandoned by
    its client (Starlette cancels the body when the client disconnects); ``on_end`` is
    called then (it frees the request's in-flight slot)."""

    def __init__(
        self,
        dialect: Dialect,
        generation: Generation,
        stats: Stats,
        headers: dict[str, str] | None = None,
        on_end: Callable[[], None] | None = None,
    ):
        self._outcome = Outcome()
        self._body = _paced_frames(dialect, generation, self._outcome, stats)
        self._stats = stats
        self._on_end = on_end
        super().__init__(
            self._body,
            media_type=dialect.stream_media_type,
            headers={"cache-control": "no-cache", **(headers or {})},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self._stats.generation(self._outcome):
                try:
                    await super().__call__(scope, receive, send)
                finally:
                    await self._body.aclose()
        finally:
            if self._on_end is not None:
                self._on_end()


async def _paced_frames(
    dialect: Dialect,
    generation: Generation,
    outcome: Outcome,
    stats: Stats,
) -> AsyncGenerator[bytes, None]:
    """The dialect's frames, each chunk after its delay; a scheduled fault replaces the rest."""
    scenario = generation.scenario
    yield dialect.start(generation)
    for index in range(len(generation.chunks) + 1):
        fault = scenario.stream_fault_at(index)
        if fault is not None:
            outcome.counter = FAULT
            if fault == "cut":
                raise SimulatedCut
            if fault == "error":
                yield dialect.stream_error(generation, scenario.message)
            elif fault == "malformed":
                yield dialect.malformed()
            return
        if index == len(generation.chunks):
            break
        await asyncio.sleep(generation.delay_before(index))
        stats.served(generation.request.prompt_tokens if index == 0 else 0, 1)
        yield dialect.delta(generation, generation.chunks[index])
    yield dialect.end(generation)
    outcome.counter = COMPLETED
