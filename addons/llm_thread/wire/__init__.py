"""Clients of the providers' wire protocols, without the ORM: each protocol module has
``stream_chat(client, *, provider, api_base, api_key, model, messages, options)``, yielding
the events of ``events``, and ``list_models(client, *, provider, api_base, api_key)``; every
failure raises ``errors.ProviderError``."""

from . import anthropic, ollama, openai
from .errors import ProviderError
from .events import Finish, StreamEvent, TextDelta, Usage

PROTOCOLS = {"openai": openai, "anthropic": anthropic, "ollama": ollama}

__all__ = [
    "PROTOCOLS",
    "Finish",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "Usage",
    "anthropic",
    "ollama",
    "openai",
]
