"""Jobs in provider batches: the provider's side of them (submit, poll, cancel, read results),
with every change of state made by the job store (``store.py``).

::

    submit_due   a due batch opened and committed (its jobs running in it), then uploaded;
                 the provider's answer recorded under the submitter's claim
    recover      a submission whose submitter died before recording the answer: found again
                 at the provider by its key (OpenAI batches carry metadata) and adopted, or its
                 jobs queued again
    poll         one poll per batch, whoever asks (the status cron, a user's status check);
                 once it has ended its results are read and applied, once; a batch that no job
                 needs any more is cancelled at the provider
    tend         the status cron's round: fail what is overdue, recover, submit, poll

No transaction is open while the provider is called (on SQLite it would hold the database's
write lock for the upload; on PostgreSQL a connection): what is read comes first, in a
transaction of its own, and what is learnt goes to the store after, in another.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import httpx

from addons.llm_thread.models.llm_provider import shared_client
from addons.llm_thread.wire import BATCH_PROTOCOLS
from addons.llm_thread.wire.batch import BatchRequest
from addons.llm_thread.wire.errors import ProviderError
from core import UserError
from core.registry import Registry

from .execution import describe_failure, retrying
from .store import BATCH, JOB, JobStore, custom_id

_logger = logging.getLogger(__name__)

METADATA_KEY = "llmjobs_batch"
STATUS_CHECK_SECONDS = 5.0  # a user's status check polls a batch at most this often


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _request_line(module, refusal: UserError | None) -> Callable[[Any], bytes]:
    def request_line(job) -> bytes:
        if refusal is not None:
            raise refusal
        messages, model, options = job._generation_request()
        _, arguments = job.provider_id._wire_stream(messages, model, **options)
        request = BatchRequest(
            custom_id(job.id), arguments["model"], arguments["messages"], arguments["options"]
        )
        return module.request_line(request)

    return request_line


def _connection(provider) -> tuple[Any, dict[str, Any]]:
    """The batch protocol module and the call settings of ``provider``."""
    module = BATCH_PROTOCOLS[provider._builtin_protocol()]
    settings = provider._wire_settings()
    settings.pop("timeout")
    return module, settings


def submit_due(registry: Registry, provider_id: int) -> int:
    """Submit the provider's next due batch, if any; returns how many jobs went in it."""
    with registry.environment() as env:
        provider = env["llm.provider"].sudo().browse(provider_id)
        if provider._execution_mode_refusal("batch"):
            return 0
        module, refusal = BATCH_PROTOCOLS[provider._builtin_protocol()], None
        try:
            settings = _connection(provider)[1]
        except UserError as error:  # no usable key: each waiting job fails with the reason
            settings, refusal = {}, error
        opening = JobStore(env).open_batch(
            provider_id,
            max_requests=module.MAX_REQUESTS,
            max_bytes=module.MAX_BYTES,
            request_line=_request_line(module, refusal),
        )
        client = shared_client(provider.timeout or None)
    if opening is None:
        return 0
    try:
        state = module.submit(
            client, lines=opening.lines, metadata={METADATA_KEY: opening.key}, **settings
        )
    except (ProviderError, httpx.HTTPError) as error:  # anything else: a bug, and the
        # submission is taken over once its claim expires
        text, retryable, retry_after = describe_failure(error, 0)
        retrying(
            registry,
            lambda store: store.batch_not_submitted(
                opening.batch_id,
                opening.token,
                f"The provider did not accept the batch: {text}",
                retryable=retryable,
                retry_after=retry_after,
            ),
        )
        return 0
    if not retrying(
        registry, lambda store: store.batch_submitted(opening.batch_id, opening.token, state)
    ):
        _refused_record(registry, opening.batch_id, state.id, module, client, settings)
    return len(opening.lines)


def _refused_record(registry, batch_id: int, external_id: str, module, client, settings) -> None:
    """Our submission was taken over meanwhile: unless it was adopted as ours, the batch we
    created is nobody's, and is cancelled (best effort)."""
    with registry.environment(readonly=True) as env:
        adopted = env[BATCH].sudo().browse(batch_id).external_id == external_id
    if adopted:
        return
    _logger.warning("Provider batch %s was recorded too late; cancelling it", external_id)
    try:
        module.cancel(client, batch_id=external_id, **settings)
    except ProviderError as error:
        _logger.warning("Provider batch %s could not be cancelled: %s", external_id, error)


def recover(registry: Registry, batch_id: int) -> str | None:
    """Take over a stale submission: adopt the batch the provider has under its key, or queue
    its jobs again. Returns "adopted", "requeued", or None (not stale any more)."""
    with registry.environment() as env:
        opening = JobStore(env).take_over_submission(batch_id)
        provider = env[BATCH].sudo().browse(batch_id).provider_id
        module, settings = _connection(provider)
        client = shared_client(provider.timeout or None)
    if opening is None:
        return None
    found = None
    if hasattr(module, "find"):
        found = module.find(client, metadata={METADATA_KEY: opening.key}, **settings)
    if found is not None:
        adopted = retrying(
            registry, lambda store: store.batch_submitted(batch_id, opening.token, found)
        )
        return "adopted" if adopted else None
    reason = (
        "Its submitter stopped before recording the provider's answer, and the provider has "
        "no batch under its key: queued again."
    )
    requeued = retrying(
        registry, lambda store: store.abandon_submission(batch_id, opening.token, reason)
    )
    return "requeued" if requeued else None


def poll(registry: Registry, batch_id: int, *, unless_polled_within: float = 0.0) -> str:
    """Poll the batch once (not when it was polled less than ``unless_polled_within``
    seconds ago); apply its results once it has ended. Returns its state after."""
    with registry.environment(readonly=True) as env:
        batch = env[BATCH].sudo().browse(batch_id)
        recent = _now() - dt.timedelta(seconds=unless_polled_within)
        if batch.state != "running" or (batch.last_polled_at and batch.last_polled_at > recent):
            return batch.state
        module, settings = _connection(batch.provider_id)
        client = shared_client(batch.provider_id.timeout or None)
        external_id = batch.external_id
        needed = (
            env[JOB].sudo().search_count([("batch_id", "=", batch_id), ("state", "=", "running")])
        )
        cancel = not needed and not batch.cancel_sent_at
    try:
        state = module.retrieve(client, batch_id=external_id, **settings)
        if cancel and not state.ended:
            state = module.cancel(client, batch_id=external_id, **settings)
            retrying(registry, lambda store: store.batch_cancel_sent(batch_id))
        results = list(module.results(client, state=state, **settings)) if state.ended else []
    except ProviderError as error:
        summary = error.summary
        retrying(registry, lambda store: store.batch_poll_failed(batch_id, summary))
        raise
    retrying(registry, lambda store: store.apply_batch(batch_id, state, results))
    return "ended" if state.ended else "running"


def tend(registry: Registry) -> None:
    """The status cron's round over every provider batch (each step on its own: one that
    fails is logged and the others go on)."""
    with registry.environment(readonly=True) as env:
        store = JobStore(env)
        stale = store.stale_submissions()
        waiting = store.jobs.read_group(
            [("state", "=", "queued"), ("execution_mode", "=", "batch")],
            ["provider_id"],
            ["__count"],
        )
        providers = [group["provider_id"] for group in waiting]
        running = env[BATCH].sudo().search([("state", "=", "running")], order="id").ids
    retrying(registry, lambda store: store.fail_overdue_batches())
    for batch_id in stale:
        _step(f"Recovering the submission of batch {batch_id}", recover, registry, batch_id)
    for provider_id in providers:
        what = f"Submitting a batch of provider {provider_id}"
        while _step(what, submit_due, registry, provider_id):
            pass
    for batch_id in running:
        _step(f"Polling batch {batch_id}", poll, registry, batch_id)


def _step(what: str, function, *args) -> Any:
    try:
        return function(*args)
    except Exception as error:
        if isinstance(error, ProviderError):
            _logger.warning("%s failed: %s", what, error.summary)
        else:
            _logger.exception("%s failed", what)
        return None
