"""``llmjobs providers list|add|set|test``: the LLM providers, as the database's superuser.

The API key is read from a hidden prompt (``--api-key-prompt``), a file (``--api-key-file``)
or an environment variable (``--api-key-env``), never from a value on the command line (shell
histories and ``ps`` show those), and it is never printed: listings say whether one is set.
``test`` makes one tiny real request through the provider's own client (the path every
generation takes) and says what the provider answered, or what it said went wrong and what to
change.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import httpx

from core.console import json_option, print_json, print_record, print_table
from core.exceptions import UserError
from core.redaction import redact_remembered

from ..wire.errors import ProviderError
from ..wire.events import Finish, TextDelta, Usage
from . import lookup

TEST_PROMPT = "Reply with the single word: ready"
TEST_MAX_TOKENS = 16
KEY_OPTIONS = "--api-key-prompt, --api-key-file or --api-key-env"


@click.group()
def providers() -> None:
    """LLM providers: list, add, change, and test one with a tiny request."""


def _key_options(command):
    for option in (
        click.option(
            "--api-key-env",
            metavar="VARNAME",
            help="Read the API key from this environment variable.",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read the API key from this file (surrounding whitespace is dropped).",
        ),
        click.option("--api-key-prompt", is_flag=True, help="Ask for the API key (typed unseen)."),
    ):
        command = option(command)
    return command


def _settings_options(command):
    for option in (
        click.option(
            "--default-model",
            metavar="NAME",
            help="The chat model used when a thread names none (added if the provider has "
            "no model of that name).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(0, 3600, min_open=True),
            help="Seconds to wait for each piece of the provider's answer.",
        ),
        click.option(
            "--api-base",
            metavar="URL",
            help="e.g. https://api.openai.com/v1, https://api.anthropic.com, "
            "http://127.0.0.1:11434 (Ollama).",
        ),
    ):
        command = option(command)
    return command


def _read_api_key(prompt: bool, path: Path | None, variable: str | None) -> str | None:
    """The key from the one source given (None when none is)."""
    if sum(bool(source) for source in (prompt, path, variable)) > 1:
        raise click.UsageError(f"Give the API key one way: {KEY_OPTIONS}, not several.")
    if prompt:
        key, source = click.prompt("API key", hide_input=True, err=True), "the prompt"
    elif path is not None:
        try:
            key, source = path.read_text(encoding="utf-8"), f"the file {path}"
        except (OSError, UnicodeDecodeError) as error:
            raise click.ClickException(
                f"Cannot read the API key from {path} ({type(error).__name__}): give a "
                "readable text file holding only the key."
            ) from None
    elif variable:
        key, source = os.environ.get(variable), f"the environment variable {variable}"
        if key is None:
            raise click.ClickException(
                f"The environment variable {variable} is not set: export the key in it "
                "first, or use --api-key-prompt."
            )
    else:
        return None
    if not key.strip():
        raise click.ClickException(f"The API key from {source} is empty.")
    return key


def _set_default_model(provider, name: str) -> None:
    models = provider.env["llm.model"]
    found = models.search([("provider_id", "=", provider.id), ("name", "=", name)], limit=1)
    if found:
        found.write({"default": True, "active": True})
    else:
        models.create(
            {"name": name, "provider_id": provider.id, "model_use": "chat", "default": True}
        )


def _summary(provider) -> str:
    key = "API key set" if provider.api_key else "no API key"
    base = provider.api_base or "no api_base"
    default = provider.env["llm.model"].search(
        [("provider_id", "=", provider.id), ("model_use", "=", "chat"), ("default", "=", True)],
        limit=1,
    )
    model = f", default model {default.name}" if default else ""
    return f"{provider.service}, {base}, timeout {provider.timeout:g} s, {key}{model}"


@providers.command("list")
@json_option
@click.pass_obj
def providers_list(obj, as_json: bool) -> None:
    """Every provider: service, API base, whether an API key is set, its models."""
    from ..controllers.providers import provider_out

    with obj.registry().environment(readonly=True) as env:
        rows = []
        for provider in env["llm.provider"].search([]):
            models = env["llm.model"].search(
                [("provider_id", "=", provider.id)], order="default desc, name"
            )
            chat_default = models.filtered(lambda m: m.default and m.model_use == "chat")
            rows.append(
                {
                    **provider_out(provider).model_dump(mode="json"),
                    "models": models.mapped("name"),
                    "default_model": chat_default[:1].name or None,
                }
            )
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["api_key"] = "set" if row["api_key_set"] else "not set"
        row["models"] = [
            f"{name}*" if name == row["default_model"] else name for name in row["models"]
        ]
    print_table(
        rows,
        [
            ("id", "ID"),
            ("name", "Name"),
            ("service", "Service"),
            ("api_base", "API base"),
            ("timeout", "Timeout"),
            ("api_key", "API key"),
            ("active", "Active"),
            ("models", "Models (*: default)"),
        ],
        empty="No providers yet: `llmjobs providers add NAME --service openai ...` adds one.",
    )


@providers.command("add")
@click.argument("name")
@click.option(
    "--service",
    required=True,
    help="The API it speaks: openai, anthropic or ollama (or one an addon adds).",
)
@_settings_options
@_key_options
@click.pass_obj
def providers_add(
    obj,
    name: str,
    service: str,
    api_base: str | None,
    timeout: float | None,
    default_model: str | None,
    api_key_prompt: bool,
    api_key_file: Path | None,
    api_key_env: str | None,
) -> None:
    """Add the provider NAME. The API key comes from a prompt, a file or an environment
    variable, never from the command line."""
    key = _read_api_key(api_key_prompt, api_key_file, api_key_env)
    with obj.registry().environment() as env:
        existing = env["llm.provider"].search([("name", "=", name)], limit=1)
        if existing:
            raise click.ClickException(
                f"A provider named '{name}' exists already (id {existing.id}): change it with "
                f"`llmjobs providers set {name} ...`, or choose another name."
            )
        values = {"name": name, "service": service, "api_base": api_base or False}
        if timeout is not None:
            values["timeout"] = timeout
        if key is not None:
            values["api_key"] = key
        provider = env["llm.provider"].create(values)
        if default_model:
            _set_default_model(provider, default_model)
        done = f"Added provider '{name}' (id {provider.id}): {_summary(provider)}."
    click.echo(done)
    click.echo(f"Try it with `llmjobs providers test {name}`.")


@providers.command("set")
@click.argument("name_or_id")
@click.option("--name", "new_name", help="Rename the provider.")
@click.option("--service", help="The API it speaks: openai, anthropic or ollama.")
@_settings_options
@_key_options
@click.option("--no-api-key", is_flag=True, help="Remove the provider's API key.")
@click.pass_obj
def providers_set(
    obj,
    name_or_id: str,
    new_name: str | None,
    service: str | None,
    api_base: str | None,
    timeout: float | None,
    default_model: str | None,
    api_key_prompt: bool,
    api_key_file: Path | None,
    api_key_env: str | None,
    no_api_key: bool,
) -> None:
    """Change the provider NAME_OR_ID (its name or id): only what is given changes."""
    if no_api_key and (api_key_prompt or api_key_file or api_key_env):
        raise click.UsageError(f"--no-api-key removes the key: give it without {KEY_OPTIONS}.")
    key = _read_api_key(api_key_prompt, api_key_file, api_key_env)
    values = {
        field: value
        for field, value in (("name", new_name), ("service", service), ("timeout", timeout))
        if value is not None
    }
    if api_base is not None:
        values["api_base"] = api_base or False  # "" clears it
    if key is not None:
        values["api_key"] = key
    if no_api_key:
        values["api_key"] = False
    if not values and not default_model:
        raise click.UsageError(
            "Nothing to change: give --name, --service, --api-base, --timeout, "
            f"--default-model, {KEY_OPTIONS}, or --no-api-key."
        )
    with obj.registry().environment() as env:
        provider = lookup.provider(env, name_or_id)
        if values:
            provider.write(values)
        if default_model:
            _set_default_model(provider, default_model)
        done = f"Changed provider '{provider.name}' (id {provider.id}): {_summary(provider)}."
    click.echo(done)


@dataclass
class Answer:
    reply: str
    model: str
    latency_seconds: float
    first_token_seconds: float | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def _ask(provider, model: str) -> Answer:
    """One tiny streamed request through the provider's client (raises ProviderError)."""
    started = time.monotonic()
    parts: list[str] = []
    first, usage, finish = None, None, None
    events = provider.chat(
        [{"role": "user", "content": TEST_PROMPT}], model=model, max_tokens=TEST_MAX_TOKENS
    )
    for event in events:
        if isinstance(event, TextDelta):
            if first is None and event.text:
                first = time.monotonic() - started
            parts.append(event.text)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Finish):
            finish = event
    return Answer(
        reply=redact_remembered("".join(parts).strip()),
        model=str((finish.metadata.get("model") if finish else None) or model),
        latency_seconds=round(time.monotonic() - started, 3),
        first_token_seconds=round(first, 3) if first is not None else None,
        finish_reason=finish.reason if finish else None,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
    )


def _advice(provider, model: str, error: ProviderError) -> str:
    """What to change, from what went wrong."""
    name, status, cause = provider.name, error.status, error.__cause__
    if status in (401, 403):
        return (
            "The provider refused the API key: set it again with `llmjobs providers set "
            f"{name} --api-key-prompt` (or --api-key-file, --api-key-env)."
        )
    if status == 404:
        return (
            f"Check the API base ({provider.api_base or 'not set'}) and the model name "
            f"('{model}'): `llmjobs providers set {name} --api-base URL`, or try another "
            "model with --model."
        )
    if status == 429:
        return (
            "The provider is limiting requests or the account is out of quota: wait, or "
            "check the account."
        )
    if status is not None and status >= 500:
        return "The provider is failing on its side: try again later."
    if status is not None:
        return (
            f"The provider refused the request: check the model name ('{model}') and that "
            f"it speaks the '{provider.service}' API."
        )
    if isinstance(cause, httpx.TimeoutException):
        return (
            f"Nothing came back within {provider.timeout:g} s: check the API base, or allow "
            f"more time with `llmjobs providers set {name} --timeout SECONDS`."
        )
    if isinstance(cause, httpx.TransportError):
        return (
            f"Nothing answered at '{provider.api_base or ''}': check the API base (`llmjobs "
            f"providers set {name} --api-base URL`) and that the server is reachable from here."
        )
    return f"Check the provider's settings (`llmjobs providers list`) and the model ('{model}')."


@providers.command("test")
@click.argument("name_or_id")
@click.option("--model", "model_name", help="The model to ask (default: the provider's).")
@json_option
@click.pass_obj
def providers_test(obj, name_or_id: str, model_name: str | None, as_json: bool) -> None:
    """Make one tiny real request to the provider NAME_OR_ID (a one-word prompt, at most 16
    tokens) and say what it answered; exit status 1 when it failed."""
    with obj.registry().environment(readonly=True) as env:
        provider = lookup.provider(env, name_or_id)
        try:
            model = provider._model_name(model_name)
        except UserError:
            raise click.ClickException(
                f"Provider '{provider.name}' has no chat model: name one with --model, or set "
                f"its default with `llmjobs providers set {provider.name} --default-model NAME`."
            ) from None
        try:
            answer = _ask(provider, model)
        except ProviderError as error:
            failure = {
                "ok": False,
                "provider": provider.name,
                "model": model,
                "error": redact_remembered(error.summary),
                "advice": redact_remembered(_advice(provider, model, error)),
            }
            if as_json:
                print_json(failure)
                raise SystemExit(1) from None
            raise click.ClickException(f"{failure['error']}\n{failure['advice']}") from None
        name = provider.name
    if as_json:
        print_json({"ok": True, "provider": name, **vars(answer)})
        return
    tokens = f"{answer.prompt_tokens or '?'} in, {answer.completion_tokens or '?'} out"
    print_record(
        {
            "reply": answer.reply or "(empty)",
            "model": answer.model,
            "latency": f"{answer.latency_seconds:.3f} s"
            + (
                f" (first token after {answer.first_token_seconds:.3f} s)"
                if answer.first_token_seconds is not None
                else ""
            ),
            "finish": answer.finish_reason,
            "tokens": tokens if answer.prompt_tokens or answer.completion_tokens else None,
        },
        [
            ("reply", "Reply"),
            ("model", "Model"),
            ("latency", "Latency"),
            ("finish", "Finish"),
            ("tokens", "Tokens"),
        ],
        title=f"Provider '{name}' answered.",
    )
