"""Finding the records an operator names on the command line: a provider by its name or id,
a model of a provider, a user by login or id, a thread by id.

Each lookup returns the record or raises ``click.ClickException`` with a sentence saying what
was not found and what exists (or how to find it), so a typo costs one line, not a traceback.
"""

from __future__ import annotations

import click

# How many names an error lists before it says "..."
LISTED = 20


def listing(names: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:LISTED])
    return shown + (", ..." if len(names) > LISTED else "")


def provider(env, name_or_id: str):
    """The provider of that name, else of that id."""
    providers = env["llm.provider"]
    found = providers.search([("name", "=", name_or_id)], limit=1)
    if not found and name_or_id.isdigit():
        found = providers.browse(int(name_or_id)).exists()
    if found:
        return found
    names = providers.search([]).mapped("name")
    known = f"the providers are {listing(names)}" if names else "there is no provider yet"
    raise click.ClickException(
        f"No provider is named '{name_or_id}' or has that id: {known} "
        "(`llmjobs providers list`; `llmjobs providers add` creates one)."
    )


def model(env, provider_record, name_or_id: str):
    """A model of ``provider_record`` by name or id."""
    models = env["llm.model"]
    domain = [("provider_id", "=", provider_record.id)]
    found = models.search([*domain, ("name", "=", name_or_id)], limit=1)
    if not found and name_or_id.isdigit():
        found = models.search([*domain, ("id", "=", int(name_or_id))], limit=1)
    if found:
        return found
    names = models.search(domain).mapped("name")
    known = f"its models are {listing(names)}" if names else "it has no model yet"
    raise click.ClickException(
        f"Provider '{provider_record.name}' has no model '{name_or_id}': {known} "
        f"(`llmjobs providers set {provider_record.name} --default-model NAME` adds one)."
    )


def model_anywhere(env, name_or_id: str):
    """A model by name or id, whatever its provider; refused when the name is ambiguous."""
    models = env["llm.model"]
    found = models.search([("name", "=", name_or_id)])
    if not found and name_or_id.isdigit():
        found = models.browse(int(name_or_id)).exists()
    if len(found) == 1:
        return found
    if found:
        owners = listing(found.mapped("provider_id.name"))
        raise click.ClickException(
            f"Several providers have a model '{name_or_id}' ({owners}): name the provider "
            "too (--provider), or give the model's id."
        )
    raise click.ClickException(
        f"No model is named '{name_or_id}' or has that id (`llmjobs providers list` shows "
        "each provider's models)."
    )


def user(env, login_or_id: str):
    """The user of that login, else of that id."""
    users = env["res.users"]
    found = users.search([("login", "=", login_or_id)], limit=1)
    if not found and login_or_id.isdigit():
        found = users.browse(int(login_or_id)).exists()
    if found:
        return found
    raise click.ClickException(
        f"No user has the login '{login_or_id}' or that id "
        "(`llmjobs user create --login ...` creates one)."
    )


def thread(env, thread_id: int):
    found = env["llm.thread"].browse(thread_id).exists()
    if not found:
        raise click.ClickException(
            f"No thread has the id {thread_id}: start a new one with --provider NAME instead."
        )
    return found
