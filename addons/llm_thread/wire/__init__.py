"""Clients of the providers' wire protocols, without the ORM.

``stream_chat(protocol, client, *, provider, api_base, api_key, model, messages, options)``
yields the events of ``events`` on a synchronous client, ``astream_chat(...)`` on an
asynchronous one; ``PROTOCOLS[protocol].list_models(client, *, provider, api_base, api_key)``
lists models. Every failure raises ``errors.ProviderError``. Each protocol module is sans-IO
(``chat_request`` and a ``Decoder``); ``transport`` drives them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from . import anthropic, ollama, openai, transport
from .errors import ProviderError
from .events import Finish, StreamEvent, TextDelta, Usage

PROTOCOLS = {"openai": openai, "anthropic": anthropic, "ollama": ollama}


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


__all__ = [
    "PROTOCOLS",
    "Finish",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "Usage",
    "anthropic",
    "astream_chat",
    "ollama",
    "openai",
    "stream_chat",
]
