"""The providers' batch APIs: OpenAI Batch (``/v1/files`` and ``/v1/batches``) and Anthropic
Message Batches (``/v1/messages/batches``), on the server of their dialect.

One clock for both (``BatchClock``): after ``validation_seconds`` a batch works its requests
one after another, ``request_seconds`` each; it expires ``window_seconds`` after its creation
with what finished by then. Its state is computed from the time at each read, so nothing runs
in the background. A request's reply is what the chat endpoint would answer, computed once,
when it finishes: its directives (``[sim:status=400]``...) and queued faults apply. Results
are shuffled: clients must match them by ``custom_id``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .dialect import Dialect, Generation, default_message
from .stats import BATCH_REQUESTS, BATCHES

if TYPE_CHECKING:
    from .app import SimulatorState

OPENAI_ENDPOINT = "/v1/chat/completions"
OPENAI_LIMITS = (50_000, 200 * 1024 * 1024)  # a batch's requests and input file bytes
OPENAI_FILE_BYTES = 512 * 1024 * 1024  # any uploaded file
ANTHROPIC_LIMITS = (100_000, 256 * 1024 * 1024)


@dataclass(frozen=True)
class BatchClock:
    """How fast batches go (seconds)."""

    request_seconds: float = 0.0
    window_seconds: float = 86400.0
    validation_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("request_seconds", "window_seconds", "validation_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"Batch setting '{name}' cannot be negative.")


@dataclass
class Batch:
    """One batch: its requests (custom_id, body), clock and what happened to it."""

    id: str
    requests: list[tuple[str, Any]]
    clock: BatchClock
    created: float = field(default_factory=time.time)
    problems: list[dict[str, Any]] = field(default_factory=list)  # OpenAI validation errors
    cancelled_at: float | None = None
    cancel_seen: bool = False  # the cancel was answered: later reads show its end
    results: dict[int, tuple[str, Any]] = field(default_factory=dict)  # index: (kind, body)
    extra: dict[str, Any] = field(default_factory=dict)  # protocol fields (files, metadata)

    @property
    def expires(self) -> float:
        return self.created + self.clock.window_seconds

    def done_by(self, now: float) -> int:
        """How many requests finished by ``now``."""
        if self.problems:
            return 0
        until = min(now, self.expires, self.cancelled_at or now)
        start = self.created + self.clock.validation_seconds
        if until < start:
            return 0
        if not self.clock.request_seconds:
            return len(self.requests)
        return min(len(self.requests), int((until - start) / self.clock.request_seconds))

    def phase(self, now: float) -> str:
        """validating, failed, running, done, expired or cancelled."""
        if self.problems:
            return "failed"
        if self.done_by(now) == len(self.requests):
            return "done"
        if self.cancelled_at is not None:
            return "cancelled" if self.cancel_seen else "cancelling"
        if now >= self.expires:
            return "expired"
        if now < self.created + self.clock.validation_seconds:
            return "validating"
        return "running"


class BatchBook:
    """The server's batches and files, shared by its requests."""

    def __init__(self, clock: BatchClock):
        self.clock = clock
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def configure(self, **settings: float) -> None:
        """New settings for the batches created from now on (batches already made keep the
        clock they were created with, so a test can slow down only the next one)."""
        unknown = sorted(set(settings) - {f.name for f in fields(BatchClock)})
        if unknown:
            raise ValueError(f"Unknown batch setting(s): {', '.join(unknown)}.")
        self.clock = replace(self.clock, **settings)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.time()
        with self.lock:
            return [
                {
                    "id": batch.id,
                    "status": batch.phase(now),
                    "total": len(batch.requests),
                    "done": batch.done_by(now),
                }
                for batch in self.batches.values()
            ]


def _settle(batch: Batch, dialect: Dialect, state: SimulatorState, now: float) -> None:
    """Compute the replies of the requests finished by ``now`` (once each)."""
    for index in range(batch.done_by(now)):
        if index not in batch.results:
            batch.results[index] = _reply(dialect, state, batch.requests[index][1])


def _reply(dialect: Dialect, state: SimulatorState, body: Any) -> tuple[str, Any]:
    """("ok", the reply object) or (status, the error object), as the chat endpoint says."""
    try:
        request = dialect.parse(body)
        scenario = state.next_scenario(request.prompt)
    except ValueError as error:
        return "400", dialect.error(400, str(error))
    if scenario.status is not None:
        message = scenario.message or default_message(scenario.status)
        return str(scenario.status), dialect.error(scenario.status, message)
    generation = Generation.plan(request, scenario, dialect.id_prefix)
    state.stats.served(request.prompt_tokens, generation.completion_tokens)
    return "ok", dialect.complete(generation)


def _shuffled(items: list, seed: str) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def batch_routes(dialect: Dialect, state: SimulatorState) -> list[Route]:
    if dialect.name == "openai":
        return OpenAIBatches(dialect, state).routes()
    if dialect.name == "anthropic":
        return AnthropicBatches(dialect, state).routes()
    return []


class _Batches:
    """What both protocols' endpoints share: auth, errors, the book."""

    def __init__(self, dialect: Dialect, state: SimulatorState):
        self.dialect, self.state, self.book = dialect, state, state.batches

    def guarded(self, handler: Callable[[Request], Awaitable[Response]]):
        """``handler`` behind the server's API key check (the chat endpoint's 401)."""

        async def endpoint(request: Request) -> Response:
            return self.state.refusal(self.dialect, request) or await handler(request)

        return endpoint

    def error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse(self.dialect.error(status, message), status_code=status)

    def find(self, request: Request) -> Batch | None:
        return self.book.batches.get(request.path_params["batch_id"])

    def missing(self, request: Request) -> JSONResponse:
        """The 404 for a batch id the server does not know."""
        return self.error(404, f"No batch found with id '{request.path_params['batch_id']}'.")

    def add(self, batch: Batch) -> None:
        self.book.batches[batch.id] = batch
        self.state.stats.count(BATCHES)
        self.state.stats.count(BATCH_REQUESTS, len(batch.requests))

    def listing(
        self, request: Request, after_key: str, before_key: str | None
    ) -> tuple[list[Batch], bool]:
        """A page of batches, newest first, after (or before) an id: the page and whether
        more follow."""
        batches = sorted(self.book.batches.values(), key=lambda b: b.created, reverse=True)
        ids = [batch.id for batch in batches]
        after = request.query_params.get(after_key)
        if after in ids:
            batches = batches[ids.index(after) + 1 :]
        before = request.query_params.get(before_key) if before_key else None
        if before in ids:
            batches = batches[: ids.index(before)]
        try:
            limit = max(1, min(int(request.query_params.get("limit", 20)), 1000))
        except ValueError:
            limit = 20
        return batches[:limit], len(batches) > limit


class OpenAIBatches(_Batches):
    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.guarded(self.upload), methods=["POST"]),
            Route("/v1/files/{file_id}", self.guarded(self.file), methods=["GET", "DELETE"]),
            Route("/v1/files/{file_id}/content", self.guarded(self.content), methods=["GET"]),
            Route("/v1/batches", self.guarded(self.create), methods=["POST"]),
            Route("/v1/batches", self.guarded(self.list), methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.guarded(self.retrieve), methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.guarded(self.cancel), methods=["POST"]),
        ]

    # -- files ---------------------------------------------------------------------------
    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        entry = {
            "id": f"file-{uuid.uuid4().hex[:24]}",
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "content": content,
        }
        self.book.files[entry["id"]] = entry
        return entry

    @staticmethod
    def _public(entry: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in entry.items() if key != "content"}

    async def upload(self, request: Request) -> Response:
        form = await request.form(max_part_size=OPENAI_FILE_BYTES + 1)
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or isinstance(upload, str):
            return self.error(400, "file: a file is required (multipart field 'file').")
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            return self.error(400, f"purpose: '{purpose}' is not a valid purpose.")
        content = await upload.read()
        if len(content) > OPENAI_FILE_BYTES:
            return self.error(400, "file: a file may be 512 MB at most.")
        with self.book.lock:
            entry = self._store_file(content, upload.filename or "upload.jsonl", purpose)
        return JSONResponse(self._public(entry))

    async def file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        with self.book.lock:
            entry = self.book.files.get(file_id)
            if entry is not None and request.method == "DELETE":
                del self.book.files[file_id]
                return JSONResponse({"id": file_id, "object": "file", "deleted": True})
        if entry is None:
            return self.error(404, f"No such File object: {file_id}")
        return JSONResponse(self._public(entry))

    async def content(self, request: Request) -> Response:
        entry = self.book.files.get(request.path_params["file_id"])
        if entry is None:
            return self.error(404, f"No such File object: {request.path_params['file_id']}")
        return Response(entry["content"], media_type="application/octet-stream")

    # -- batches -------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        if body.get("completion_window") != "24h":
            return self.error(400, "completion_window: only '24h' is supported.")
        endpoint = body.get("endpoint")
        if endpoint not in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings"):
            return self.error(400, f"endpoint: '{endpoint}' is not a batch endpoint.")
        entry = self.book.files.get(body.get("input_file_id"))
        if entry is None:
            return self.error(400, f"input_file_id: no such file {body.get('input_file_id')}.")
        requests, problems = _read_input(entry["content"], endpoint)
        batch = Batch(
            f"batch_{uuid.uuid4().hex[:24]}", requests, self.book.clock, problems=problems
        )
        batch.extra = {
            "endpoint": endpoint,
            "input_file_id": entry["id"],
            "metadata": body.get("metadata"),
        }
        with self.book.lock:
            self.add(batch)
            return JSONResponse(self._object(batch, time.time()))

    async def list(self, request: Request) -> Response:
        now = time.time()
        with self.book.lock:
            page, more = self.listing(request, "after", None)
            data = [self._object(batch, now) for batch in page]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    async def retrieve(self, request: Request) -> Response:
        with self.book.lock:
            batch = self.find(request)
            if batch is None:
                return self.missing(request)
            return JSONResponse(self._object(batch, time.time()))

    async def cancel(self, request: Request) -> Response:
        now = time.time()
        with self.book.lock:
            batch = self.find(request)
            if batch is None:
                return self.missing(request)
            if batch.phase(now) in ("failed", "done", "expired"):
                return self.error(
                    409, f"Cannot cancel a batch with status '{self._status(batch, now)}'."
                )
            if batch.cancelled_at is None:
                batch.cancelled_at = now
            answer = self._object(batch, now)
            batch.cancel_seen = True
            return JSONResponse(answer)

    def _status(self, batch: Batch, now: float) -> str:
        return {
            "validating": "validating",
            "failed": "failed",
            "running": "in_progress",
            "done": "completed",
            "expired": "expired",
            "cancelling": "cancelling",
            "cancelled": "cancelled",
        }[batch.phase(now)]

    def _object(self, batch: Batch, now: float) -> dict[str, Any]:
        """The batch object now; once ended, its output and error files exist."""
        _settle(batch, self.dialect, self.state, now)
        status = self._status(batch, now)
        ended = status in ("completed", "expired", "cancelled", "failed")
        if ended and "output_file_id" not in batch.extra and not batch.problems:
            self._write_files(batch, status)
        done = batch.results.values()
        failed = sum(kind != "ok" for kind, _ in done)
        start = batch.created + batch.clock.validation_seconds
        finished = min(now, batch.expires, batch.cancelled_at or now)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.extra["endpoint"],
            "errors": {"object": "list", "data": batch.problems} if batch.problems else None,
            "input_file_id": batch.extra["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.extra.get("output_file_id"),
            "error_file_id": batch.extra.get("error_file_id"),
            "created_at": int(batch.created),
            "in_progress_at": int(start) if status != "validating" and not batch.problems else None,
            "expires_at": int(batch.expires),
            "finalizing_at": int(finished) if status == "completed" else None,
            "completed_at": int(finished) if status == "completed" else None,
            "failed_at": int(batch.created) if status == "failed" else None,
            "expired_at": int(batch.expires) if status == "expired" else None,
            "cancelling_at": int(batch.cancelled_at) if batch.cancelled_at else None,
            "cancelled_at": int(batch.cancelled_at) if status == "cancelled" else None,
            "request_counts": {
                "total": len(batch.requests),
                "completed": len(batch.results) - failed,
                "failed": failed,
            },
            "metadata": batch.extra.get("metadata"),
        }

    def _write_files(self, batch: Batch, status: str) -> None:
        output, failures = [], []
        for index, (custom_id, _) in enumerate(batch.requests):
            line_id = f"batch_req_{uuid.uuid4().hex[:24]}"
            if index in batch.results:
                kind, body = batch.results[index]
                code = 200 if kind == "ok" else int(kind)
                row = {
                    "id": line_id,
                    "custom_id": custom_id,
                    "response": {"status_code": code, "request_id": line_id, "body": body},
                    "error": None,
                }
                (output if kind == "ok" else failures).append(row)
            elif status == "expired":
                message = "This request could not be executed before the completion window expired."
                failures.append(
                    {
                        "id": line_id,
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": "batch_expired", "message": message},
                    }
                )
        for key, rows in (("output_file_id", output), ("error_file_id", failures)):
            if rows:
                entry = self._store_file(
                    _jsonl(_shuffled(rows, batch.id)), f"{batch.id}_{key}.jsonl", "batch_output"
                )
                batch.extra[key] = entry["id"]
        batch.extra.setdefault("output_file_id", None)


def _read_input(content: bytes, endpoint: str) -> tuple[list[tuple[str, Any]], list[dict]]:
    """The requests of an input file, or the validation errors that fail its batch."""
    requests, problems, seen = [], [], set()
    if len(content) > OPENAI_LIMITS[1]:
        message = f"A batch input file may be {OPENAI_LIMITS[1] // 2**20} MB at most."
        return [], [_problem("file_too_large", message, None)]
    lines = content.decode("utf-8", "replace").splitlines()
    if len(lines) > OPENAI_LIMITS[0]:
        problems.append(
            _problem(
                "too_many_requests",
                f"A batch may hold {OPENAI_LIMITS[0]:,} requests at most.",
                None,
            )
        )
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError:
            problems.append(_problem("invalid_json_line", "This line is not valid JSON.", number))
            continue
        custom_id = row.get("custom_id") if isinstance(row, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            problems.append(
                _problem("missing_required_parameter", "custom_id is required.", number)
            )
        elif custom_id in seen:
            problems.append(
                _problem("duplicate_custom_id", f"custom_id '{custom_id}' is used twice.", number)
            )
        elif row.get("method") != "POST":
            problems.append(_problem("invalid_method", "method must be POST.", number))
        elif row.get("url") != endpoint:
            problems.append(
                _problem(
                    "mismatched_endpoint", f"url must be the batch's endpoint {endpoint}.", number
                )
            )
        elif endpoint != OPENAI_ENDPOINT:
            problems.append(
                _problem(
                    "unsupported_endpoint", f"The simulator runs {OPENAI_ENDPOINT} only.", number
                )
            )
        else:
            seen.add(custom_id)
            requests.append((custom_id, row.get("body")))
    if not requests and not problems:
        problems.append(_problem("empty_file", "The input file has no requests.", None))
    return ([] if problems else requests), problems


def _problem(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


class AnthropicBatches(_Batches):
    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages/batches", self.guarded(self.create), methods=["POST"]),
            Route("/v1/messages/batches", self.guarded(self.list), methods=["GET"]),
            Route(
                "/v1/messages/batches/{batch_id}",
                self.guarded(self.retrieve),
                methods=["GET", "DELETE"],
            ),
            Route(
                "/v1/messages/batches/{batch_id}/cancel",
                self.guarded(self.cancel),
                methods=["POST"],
            ),
            Route(
                "/v1/messages/batches/{batch_id}/results",
                self.guarded(self.results),
                methods=["GET"],
            ),
        ]

    async def create(self, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > ANTHROPIC_LIMITS[1]:
            return self.error(413, "A message batch may be 256 MB at most.")
        try:
            body = json.loads(raw)
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return self.error(400, "requests: a non-empty list of requests is required.")
        if len(items) > ANTHROPIC_LIMITS[0]:
            return self.error(
                400, f"requests: a message batch may hold {ANTHROPIC_LIMITS[0]:,} requests at most."
            )
        requests, seen = [], set()
        for index, item in enumerate(items):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not custom_id:
                return self.error(400, f"requests.{index}.custom_id: Field required")
            if custom_id in seen:
                return self.error(400, f"requests.{index}.custom_id: '{custom_id}' is used twice.")
            seen.add(custom_id)
            requests.append((custom_id, item.get("params")))
        batch = Batch(f"msgbatch_{uuid.uuid4().hex[:24]}", requests, self.book.clock)
        with self.book.lock:
            self.add(batch)
            return JSONResponse(self._object(batch, time.time(), request))

    async def list(self, request: Request) -> Response:
        now = time.time()
        with self.book.lock:
            page, more = self.listing(request, "after_id", "before_id")
            data = [self._object(batch, now, request) for batch in page]
        return JSONResponse(
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def retrieve(self, request: Request) -> Response:
        now = time.time()
        with self.book.lock:
            batch = self.find(request)
            if batch is None:
                return self.missing(request)
            if request.method == "DELETE":
                if self._status(batch, now) != "ended":
                    return self.error(400, "A message batch can be deleted only once it has ended.")
                del self.book.batches[batch.id]
                return JSONResponse({"id": batch.id, "type": "message_batch_deleted"})
            return JSONResponse(self._object(batch, now, request))

    async def cancel(self, request: Request) -> Response:
        now = time.time()
        with self.book.lock:
            batch = self.find(request)
            if batch is None:
                return self.missing(request)
            if batch.cancelled_at is None and self._status(batch, now) != "ended":
                batch.cancelled_at = now
            answer = self._object(batch, now, request)
            batch.cancel_seen = True
            return JSONResponse(answer)

    async def results(self, request: Request) -> Response:
        now = time.time()
        with self.book.lock:
            batch = self.find(request)
            if batch is None:
                return self.missing(request)
            if self._status(batch, now) != "ended":
                return self.error(
                    400, "The message batch has not ended: its results are not ready."
                )
            rows = [self._result(batch, index, now) for index in range(len(batch.requests))]
        return Response(_jsonl(_shuffled(rows, batch.id)), media_type="application/binary")

    def _result(self, batch: Batch, index: int, now: float) -> dict[str, Any]:
        custom_id = batch.requests[index][0]
        if index not in batch.results:
            kind = "canceled" if batch.cancelled_at is not None else "expired"
            return {"custom_id": custom_id, "result": {"type": kind}}
        kind, body = batch.results[index]
        if kind == "ok":
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": body}}
        return {"custom_id": custom_id, "result": {"type": "errored", "error": body}}

    def _status(self, batch: Batch, now: float) -> str:
        phase = batch.phase(now)
        if phase in ("done", "expired", "cancelled"):
            return "ended"
        return "canceling" if phase == "cancelling" else "in_progress"

    def _object(self, batch: Batch, now: float, request: Request) -> dict[str, Any]:
        _settle(batch, self.dialect, self.state, now)
        status = self._status(batch, now)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if status != "ended":
            counts["processing"] = len(batch.requests)
        else:
            for index in range(len(batch.requests)):
                counts[
                    {"ok": "succeeded"}.get(self._kind(batch, index), self._kind(batch, index))
                ] += 1
        ended_at = min(now, batch.expires, batch.cancelled_at or now) if status == "ended" else None
        url = str(request.base_url).rstrip("/")
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": _rfc3339(batch.created),
            "expires_at": _rfc3339(batch.expires),
            "ended_at": _rfc3339(ended_at),
            "cancel_initiated_at": _rfc3339(batch.cancelled_at),
            "archived_at": None,
            "results_url": f"{url}/v1/messages/batches/{batch.id}/results"
            if status == "ended"
            else None,
        }

    @staticmethod
    def _kind(batch: Batch, index: int) -> str:
        if index in batch.results:
            return "ok" if batch.results[index][0] == "ok" else "errored"
        return "canceled" if batch.cancelled_at is not None else "expired"
