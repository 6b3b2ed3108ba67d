"""LLM providers and the odoo-llm style service dispatch.

``provider.chat(...)`` calls ``<service>_chat``, ``provider.list_models()`` calls
``<service>_models``, ``provider.format_messages()`` calls ``<service>_format_messages``. To
add a service, an addon extends the model::

    class MyProvider(models.Model):
        _inherit = "llm.provider"
        service = fields.Selection(selection_add=[("mine", "Mine")])

        def mine_chat(self, messages, model=None, stream=True, http_client=None, **options):
            ...  # yield wire events: TextDelta, Usage, Finish (addons.llm_thread.wire.events)

The three built-in services speak their real wire protocols through ``wire/``. The API key
is a ``Secret`` field: stored encrypted, read as a masked ``SecretStr``; its clear value is
taken only at the wire boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import SecretStr

from core import UserError, ValidationError, api, fields, models

from .. import wire
from ..wire.events import Finish, TextDelta, Usage

SERVICES = [("openai", "OpenAI"), ("anthropic", "Anthropic"), ("ollama", "Ollama")]


class LLMProvider(models.Model):
    _name = "llm.provider"
    _description = "LLM provider"
    _order = "name"
    _sql_constraints = [("name_unique", "unique(name)", "Another provider has this name.")]

    name = fields.Char(required=True)
    service = fields.Selection(SERVICES, required=True)
    api_base = fields.Char(help="e.g. https://api.openai.com/v1")
    api_key = fields.Secret()
    active = fields.Boolean(default=True)
    timeout = fields.Float(
        default=60.0, help="Seconds to wait for each piece of the provider's answer"
    )
    model_ids = fields.One2many("llm.model", "provider_id", string="Models")

    # -- the API key ---------------------------------------------------------------------------
    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if vals.get("api_key"):
                vals["api_key"] = _checked_key(vals["api_key"], vals.get("name"))
        return super().create(vals_list)

    def write(self, vals):
        if vals.get("api_key"):
            vals = {
                **vals,
                "api_key": _checked_key(
                    vals["api_key"], vals.get("name") or ", ".join(self.mapped("name"))
                ),
            }
        return super().write(vals)

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.ensure_one()
        implementation = getattr(self, f"{self.service}_{method}", None)
        if implementation is None:
            raise UserError(
                f"Provider '{self.name}' uses the service '{self.service}', which has no "
                f"'{self.service}_{method}' method: the addon that adds this service must "
                "define it."
            )
        return implementation(*args, **kwargs)

    def chat(
        self,
        messages: list[dict],
        model=None,
        stream: bool = True,
        http_client: httpx.Client | None = None,
        **options: Any,
    ):
        """Stream a reply: yields ``TextDelta``, ``Usage`` and finally ``Finish`` (raises
        ``ProviderError`` on failure). With ``stream=False``, returns ``{'content',
        'usage', 'finish_reason'}``. ``model``: an ``llm.model``, a name, or None for the
        provider's default chat model."""
        events = self._dispatch(
            "chat",
            self.format_messages(messages),
            model=self._model_name(model),
            http_client=http_client,
            **options,
        )
        return events if stream else _collect(events)

    def list_models(self):
        """Fetch the provider's models and create or update ``llm.model`` rows."""
        self.ensure_one()
        Model = self.env["llm.model"]
        found = self._dispatch("models")
        existing = {m.name: m for m in Model.search([("provider_id", "=", self.id)])}
        for entry in found:
            record = existing.get(entry["name"])
            if record:
                record.write({"model_use": entry.get("model_use", "chat"), "active": True})
            else:
                existing[entry["name"]] = Model.create(
                    {
                        "name": entry["name"],
                        "provider_id": self.id,
                        "model_use": entry.get("model_use", "chat"),
                    }
                )
        return Model.browse([existing[e["name"]].id for e in found])

    def _default_chat_model(self):
        """The chat model used when none is named: the default one, else the first."""
        self.ensure_one()
        return self.env["llm.model"].search(
            [("provider_id", "=", self.id), ("model_use", "=", "chat"), ("active", "=", True)],
            order="default desc, id",
            limit=1,
        )

    def format_messages(self, messages: list[dict]) -> list[dict]:
        return self._dispatch("format_messages", messages)

    def _model_name(self, model) -> str:
        if isinstance(model, str):
            return model
        if model:
            return model.name
        default = self._default_chat_model()
        if not default:
            raise UserError(
                f"Provider '{self.name}' has no chat model: add one, or run list_models()."
            )
        return default.name

    # -- the built-in services --------------------------------------------------------------
    def _wire_chat(
        self, protocol: str, messages, model: str, http_client: httpx.Client | None, options: dict
    ) -> Iterator:
        settings = self._wire_settings()  # read now: nothing is read while streaming
        return _stream(protocol, settings, messages, model, http_client, options)

    def _wire_stream(
        self, messages: list[dict], model=None, **options: Any
    ) -> tuple[str, dict[str, Any]] | None:
        """``(protocol, arguments of wire.astream_chat)`` for a chat of this provider, when its
        service is a built-in protocol and no addon overrides its chat method: what an
        asynchronous client needs, read now, so that nothing is read while it streams.
        None when ``<service>_chat`` must run (an addon's own service)."""
        protocol = self._builtin_protocol()
        if protocol is None:
            return None
        settings = self._wire_settings()
        return protocol, {
            "provider": settings["provider"],
            "api_base": settings["api_base"],
            "api_key": settings["api_key"],
            "timeout": settings["timeout"],
            "model": self._model_name(model),
            "messages": self.format_messages(messages),
            "options": options,
        }

    def _builtin_protocol(self) -> str | None:
        """The wire protocol this provider's chats speak, when its service is a built-in one
        and no addon overrides its chat method; else None."""
        self.ensure_one()
        method = f"{self.service}_chat"
        builtin = vars(LLMProvider).get(method)
        if self.service not in wire.PROTOCOLS or getattr(type(self), method) is not builtin:
            return None
        return self.service

    def _wire_settings(self) -> dict[str, Any]:
        self.ensure_one()
        return {
            "provider": self.name,
            "api_base": self.api_base or "",
            "api_key": _checked_key(self.api_key, self.name) if self.api_key else None,
            "timeout": self.timeout or None,
        }

    def _wire_models(self, protocol: str) -> list[dict]:
        settings = self._wire_settings()
        client = shared_client(settings.pop("timeout"))
        return wire.PROTOCOLS[protocol].list_models(client, **settings)

    def _plain_messages(self, messages: list[dict]) -> list[dict]:
        return [{"role": m["role"], "content": m.get("content") or ""} for m in messages]

    def openai_chat(self, messages, model=None, http_client=None, **options):
        return self._wire_chat("openai", messages, model, http_client, options)

    def anthropic_chat(self, messages, model=None, http_client=None, **options):
        return self._wire_chat("anthropic", messages, model, http_client, options)

    def ollama_chat(self, messages, model=None, http_client=None, **options):
        return self._wire_chat("ollama", messages, model, http_client, options)

    def openai_models(self):
        return self._wire_models("openai")

    def anthropic_models(self):
        return self._wire_models("anthropic")

    def ollama_models(self):
        return self._wire_models("ollama")

    openai_format_messages = anthropic_format_messages = ollama_format_messages = _plain_messages


_CLIENTS: dict[float | None, httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(timeout: float | None) -> httpx.Client:
    """A process-wide client per timeout: connections are pooled and TLS set up once (a
    new client costs a CA-bundle load and a connection per call). httpx clients are
    thread-safe."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(timeout)
        if client is None or client.is_closed:
            client = _CLIENTS[timeout] = httpx.Client(timeout=timeout)
        return client


def _stream(
    protocol: str,
    settings: dict,
    messages,
    model: str,
    http_client: httpx.Client | None,
    options: dict,
) -> Iterator:
    """The wire stream, on the caller's client or the shared one. Closing the generator
    closes the HTTP stream (the response), not the client."""
    client = http_client or shared_client(settings["timeout"])
    yield from wire.stream_chat(
        protocol,
        client,
        provider=settings["provider"],
        api_base=settings["api_base"],
        api_key=settings["api_key"],
        model=model,
        messages=messages,
        options=options,
    )


def _checked_key(value: str | SecretStr, provider: str | None) -> str:
    """The API key without the whitespace around it (a key pasted from a file ends with a
    newline); UserError when what is left could not be sent in an HTTP header. The message
    names the position of the bad character, never the key."""
    if not isinstance(value, str | SecretStr):
        return value  # the field refuses it, with its own error
    key = (value.get_secret_value() if isinstance(value, SecretStr) else value).strip()
    bad = next((index for index, char in enumerate(key) if not "!" <= char <= "~"), None)
    if bad is not None:
        raise ValidationError(
            f"The API key of provider '{provider or '?'}' has a space, a control or a "
            f"non-ASCII character (character {bad + 1} of {len(key)}): an API key is "
            "printable ASCII. Copy it again from the provider's console and set it again."
        )
    return key


def _collect(events) -> dict[str, Any]:
    content, usage, finish = [], None, None
    for event in events:
        if isinstance(event, TextDelta):
            content.append(event.text)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Finish):
            finish = event
    return {
        "content": "".join(content),
        "usage": usage,
        "finish_reason": finish.reason if finish else None,
    }
