"""Clients of the providers' wire protocols, without the ORM.

``stream_chat(protocol, client, *, provider, api_base, api_key, model, messages, options)``
yields the events of ``events`` on a synchronous client, ``astream_chat(...)`` on an
asynchronous one; ``PROTOCOLS[protocol].list_models(client, *, provider, api_base, api_key)``
lists models. ``stream_background`` / ``astream_background`` stream an OpenAI reply run as a
background response (``openai_responses``): it yields ``Resumable`` first and deltas with
cursors, and ``resume=(response_id, cursor)`` re-attaches to it after a lost stream instead
of generating again. ``BATCH_PROTOCOLS[protocol]`` submits, polls, cancels and reads provider
batches (see ``batch``). A stream whose response headers report the provider's requests
limit yields ``RateLimit`` first (see ``rate_limits``). Every failure raises
``errors.ProviderError``. Each protocol module
is sans-IO (``chat_request`` and a ``Decoder``); ``transport`` drives them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from . import anthropic, anthropic_batch, ollama, openai, openai_batch, openai_responses, transport
from .errors import ProviderError
from .events import Finish, RateLimit, Resumable, StreamEvent, TextDelta, Usage

PROTOCOLS = {"openai": openai, "anthropic": anthropic, "ollama": ollama}
BATCH_PROTOCOLS = {"openai": openai_batch, "anthropic": anthropic_batch}


def stream_chat(
    protocol: str, client: httpx.Client, *, provider: str, api_key: str | None, **request: Any
) -> Iterator[StreamEvent]:
    """Stream one reply (``request``: api_base, model, messages, options)."""
    module = PROTOCOLS[protocol]
    return transport.stream(
        client,
        module.chat_request(api_key=api_key, **request),
        module.Decoder(provider, api_key),
        provider=provider,
        api_key=api_key,
    )


def astream_chat(
    protocol: str,
    client: httpx.AsyncClient,
    *,
    provider: str,
    api_key: str | None,
    timeout: float | None = None,
    **request: Any,
) -> AsyncIterator[StreamEvent]:
    """``stream_chat`` on an asynchronous client; ``timeout`` bounds each read."""
    module = PROTOCOLS[protocol]
    return transport.astream(
        client,
        module.chat_request(api_key=api_key, **request),
        module.Decoder(provider, api_key),
        provider=provider,
        api_key=api_key,
        timeout=timeout,
    )


def _background_request(
    api_key: str | None, resume: tuple[str, int] | None, **request: Any
) -> transport.ChatRequest:
    if resume is None:
        return openai_responses.background_request(api_key=api_key, **request)
    response_id, cursor = resume
    return openai_responses.resume_request(
        api_base=request["api_base"],
        api_key=api_key,
        response_id=response_id,
        starting_after=cursor,
    )


def stream_background(
    client: httpx.Client,
    *,
    provider: str,
    api_key: str | None,
    resume: tuple[str, int] | None = None,
    **request: Any,
) -> Iterator[StreamEvent]:
    """Stream one OpenAI reply run as a background response (``request``: api_base, model,
    messages, options); with ``resume=(response_id, cursor)``, the rest of that response
    after ``cursor`` (model, messages and options are then unused)."""
    return transport.stream(
        client,
        _background_request(api_key, resume, **request),
        openai_responses.Decoder(provider, api_key),
        provider=provider,
        api_key=api_key,
    )


def astream_background(
    client: httpx.AsyncClient,
    *,
    provider: str,
    api_key: str | None,
    timeout: float | None = None,
    resume: tuple[str, int] | None = None,
    **request: Any,
) -> AsyncIterator[StreamEvent]:
    """``stream_background`` on an asynchronous client; ``timeout`` bounds each read."""
    return transport.astream(
        client,
        _background_request(api_key, resume, **request),
        openai_responses.Decoder(provider, api_key),
        provider=provider,
        api_key=api_key,
        timeout=timeout,
    )


__all__ = [
    "BATCH_PROTOCOLS",
    "PROTOCOLS",
    "Finish",
    "ProviderError",
    "RateLimit",
    "Resumable",
    "StreamEvent",
    "TextDelta",
    "Usage",
    "anthropic",
    "astream_background",
    "astream_chat",
    "ollama",
    "openai",
    "openai_responses",
    "stream_background",
    "stream_chat",
]
