"""The stream engine's writer: one thread, one database connection at a time, recording what
every stream of the worker did.

Every FLUSH_INTERVAL, and at once when a stream has its first piece or ends (a busy writer,
one that flushed less than URGENT_GAP ago, waits out the gap: what comes meanwhile goes in the
same flush), one transaction; two when a stream completed before its first piece was saved and
the writer is not busy: its pieces are committed first, so that its follower sees the reply
begin at once (a busy writer records them with the end). Each flush:

- the background responses the streams began on are recorded (before their pieces), and a
  provider's word that its requests limit is spent holds every worker back (``throttle``);
- the text the streams got since the last flush goes to the stream log, a piece per stream;
  the store locks their job rows first, so each piece is fenced by its lease (a stream whose
  lease was lost, or whose cancellation was requested, is stopped and its pieces dropped);
- the streams that ended are recorded: completed (the reply's body written once, from its
  pieces), failed (a retry scheduled when retryable), cancelled or handed back;
- every BEAT_SECONDS, and at once when a cancellation is requested, every lease is renewed (a
  stream whose lease is not renewed is stopped) and ``on_beat(env)`` runs (the worker's row);
- the jobs that moved are announced in one NOTIFY.

While the database is unavailable, pieces and ends wait in memory, the streams go on, and the
writer tries again, less often. After a failed commit (whose outcome is unknown) it first
reads how far each log got, so that no piece is logged twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from core import DatabaseUnavailable
from core.notify import notifier_for
from core.registry import Registry

from .signals import CANCEL
from .store import LEASE_SECONDS, Completion, JobStore, Piece, reply_values

if TYPE_CHECKING:
    from .engine import Stream, StreamEngine

_logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
URGENT_GAP = 0.01
"""Seconds at least between two flushes: a first piece or an end is flushed at once, unless
the writer flushed less than this ago (it is busy: the others that come meanwhile go in the
same transaction, not one each)."""
BEAT_SECONDS = min(2.0, LEASE_SECONDS / 3)
_RETRY_MAX = 2.0
SHUTDOWN_REASON = "The worker shut down during the attempt."


class Writer:
    def __init__(self, registry: Registry, engine: StreamEngine, on_beat=None):
        self.registry = registry
        self.engine = engine
        self.on_beat = on_beat
        self.notifier = notifier_for(registry)
        self._condition = threading.Condition()
        self._urgent = False
        self._stopping = False
        self._unsure = False  # the last commit failed: what it wrote is unknown
        self._flushed_at = 0.0  # (monotonic) the end of the last flush that wrote
        self._unsaved: dict[Stream, list[Piece]] = {}
        self._last_seq: dict[Stream, int] = {}
        self._thread = threading.Thread(target=self._run, name="llmjobs-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Flush now (a first piece, an end)."""
        with self._condition:
            self._urgent = True
            self._condition.notify()

    def stop(self) -> None:
        """Flush what is left, then stop."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout=60)

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        delay, next_beat = FLUSH_INTERVAL, 0.0
        cancels = self.notifier.generation(CANCEL)
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._urgent or self._stopping, delay)
                stopping = self._stopping
            gap = self._flushed_at + URGENT_GAP - time.monotonic()
            busy = gap > 0
            if busy and not stopping:  # what else ends meanwhile goes in this flush
                time.sleep(gap)
            with self._condition:
                self._urgent = False
            now, requested = time.monotonic(), self.notifier.generation(CANCEL)
            beat = now >= next_beat or requested != cancels
            try:
                self.flush(beat, busy)
            except DatabaseUnavailable:  # core.database logs the outage, once
                delay = min(max(delay * 2, 0.25), _RETRY_MAX)
            except Exception:
                _logger.exception("The stream writer failed; trying again shortly")
                delay = 1.0
            else:
                delay = FLUSH_INTERVAL
                if beat:
                    next_beat, cancels = now + BEAT_SECONDS, requested
            if stopping and not self._pending():
                return

    def _pending(self) -> bool:
        return any(not stream.recorded.is_set() for stream in self.engine._streams())

    # -- one flush ---------------------------------------------------------------------------
    def flush(self, beat: bool, busy: bool = False) -> None:
        """One flush (``beat``: leases renewed too); a ``busy`` writer records a short
        reply's pieces with its end, in one transaction, not first."""
        streams = self.engine._streams()
        ending = [s for s in streams if s.outcome is not None and not s.recorded.is_set()]
        for stream in streams:
            self._take(stream)
        flowing = [s for s in streams if s.outcome is None]
        pieces = [p for s in flowing for p in self._unsaved.get(s, ())]
        responses = [s for s in streams if s.response and not s.response_saved]
        throttles = [(s, s.throttle) for s in streams if s.throttle]
        if not (pieces or ending or beat or responses or throttles):
            return
        if not busy:
            self._show_first_pieces(ending)
        try:
            with self.registry.environment() as env, env.cr.atomic():
                store = JobStore(env)
                if self._unsure:
                    self._drop_logged(store, streams)
                    pieces = [p for s in flowing for p in self._unsaved.get(s, ())]
                store.attach_responses([(s.lease, *s.response) for s in responses])
                for stream, seconds in throttles:
                    store.throttle(stream.prepared.provider_id, seconds)
                lost = store.append(pieces)
                results = self._record_all(env, store, ending) if ending else {}
                if beat:
                    lost += self._beat(env, store, flowing)
        except DatabaseUnavailable:
            self._unsure = True  # it may have committed before the connection broke
            raise
        self._unsure = False
        self._flushed_at = time.monotonic()
        for stream in responses:
            stream.response_saved = True
        for stream, _ in throttles:
            stream.throttle = None
        for stream in flowing:
            self._unsaved.pop(stream, None)
        for stream, result in results.items():
            if result == "lost":
                _logger.warning(
                    "Generation job %s is no longer this worker's (its lease expired or it was "
                    "taken back): the end of its attempt was refused, and another attempt "
                    "gives the reply",
                    stream.lease.job_id,
                )
            self._done(stream, result)
        for lease in dict.fromkeys(lost):
            self.engine.abort(lease, "fenced")

    def _show_first_pieces(self, ending: list[Stream]) -> None:
        """Commit, ahead of their ends, the pieces of streams that completed before their
        first piece was saved (a short reply): its follower sees the reply begin without
        waiting for the completion's transaction, and the log still holds the whole reply
        when the completion's body is written."""
        streams = [
            stream
            for stream in ending
            if stream.outcome[0] == "complete"
            and not stream.prepared.background  # (its response is recorded before pieces)
            and any(piece.first for piece in self._unsaved.get(stream, ()))
        ]
        if not streams or self._unsure:  # (after an unsure commit: with the ends, as usual)
            return
        pieces = [piece for stream in streams for piece in self._unsaved[stream]]
        try:
            with self.registry.environment() as env, env.cr.atomic():
                JobStore(env).append(pieces, completed=True)
        except DatabaseUnavailable:
            self._unsure = True  # it may have committed before the connection broke
            raise
        for stream in streams:  # (a lease lost meanwhile: its end is refused as well)
            self._unsaved.pop(stream, None)

    def _take(self, stream: Stream) -> None:
        """The stream's new text becomes its next piece (unsaved until a flush commits)."""
        text, cursor = stream.take()
        if not text:
            return
        first = stream not in self._last_seq
        seq = self._last_seq.get(stream, stream.prepared.seq) + 1
        self._last_seq[stream] = seq
        piece = Piece(stream.lease, seq, stream.prepared.attempt, text, first, cursor)
        self._unsaved.setdefault(stream, []).append(piece)

    def _drop_logged(self, store: JobStore, streams: list[Stream]) -> None:
        logged = store.logged_through([s.lease.job_id for s in streams])
        for stream, pieces in self._unsaved.items():
            last = logged.get(stream.lease.job_id, 0)
            self._unsaved[stream] = [p for p in pieces if p.seq > last]

    def _record_all(self, env, store: JobStore, ending: list[Stream]) -> dict[Stream, str]:
        """Record the ends of ``ending`` together (the completions in a few statements for
        them all); when one cannot be recorded, each alone."""
        completing = [stream for stream in ending if stream.outcome[0] == "complete"]
        try:
            with env.cr.atomic():
                completed = store.complete_many(
                    [_completion(s, self._unsaved.get(s, [])) for s in completing]
                )
                results = {s: "completed" if s.lease in completed else "lost" for s in completing}
                for stream in ending:
                    if stream not in results:
                        results[stream] = _record_end(store, stream, self._unsaved.get(stream, []))
                return results
        except DatabaseUnavailable:
            raise
        except Exception:  # one end is broken: each end alone, to keep the others
            return {stream: self._record(env, store, stream) for stream in ending}

    def _record(self, env, store: JobStore, stream: Stream) -> str:
        """Record the stream's end, all or nothing: an end that cannot be recorded (a bug) is
        logged and left to the lease's expiry, not retried for ever."""
        tail = self._unsaved.get(stream, [])
        try:
            with env.cr.atomic():
                return _record_end(store, stream, tail)
        except DatabaseUnavailable:
            raise
        except Exception:
            _logger.exception(
                "The end of generation job %s cannot be recorded; its lease will expire and the "
                "job run again",
                stream.lease.job_id,
            )
            return "broken"

    def _beat(self, env, store: JobStore, flowing: list[Stream]) -> list:
        with self.engine.lock:
            held = list(self.engine.held)
        leases = [s.lease for s in flowing] + held
        renewed = set(store.renew(leases))
        if self.on_beat is not None:
            self.on_beat(env)
        return [lease for lease in leases if lease not in renewed]

    def _done(self, stream: Stream, result: str) -> None:
        self._unsaved.pop(stream, None)
        self._last_seq.pop(stream, None)
        if result in ("cancelled", "failed"):
            self.engine.stop_response(stream)
        stream.result = result
        self.engine.forget(stream)
        stream.recorded.set()


def _completion(stream: Stream, tail: list[Piece]) -> Completion:
    """A completed stream's reply, with the pieces of its log not saved yet."""
    values = reply_values(stream.text, stream.usage, stream.finish)
    return Completion(stream.lease, values, tail, stream.usage, stream.remaining)


def _record_end(store: JobStore, stream: Stream, tail: list[Piece]) -> str:
    kind, *details = stream.outcome
    lease, text = stream.lease, stream.text
    if kind == "complete":
        return "completed" if store.complete_many([_completion(stream, tail)]) else "lost"
    if kind == "fail":
        message, retryable, *rest = details
        retry_after = rest[0] if rest else None
        failed = store.fail(
            lease, message, retryable=retryable, retry_after=retry_after, text=text, tail=tail
        )
        return "failed" if failed else "lost"
    if kind == "throttled":
        message, retry_after = details
        return "interrupted" if store.hold_back(lease, message, retry_after) else "lost"
    if store.finish_cancelled(lease, text, tail):
        return "cancelled"
    if kind == "fenced":
        return "lost"
    reason = details[0] if kind == "release" else SHUTDOWN_REASON
    return "interrupted" if store.release(lease, reason) else "lost"
