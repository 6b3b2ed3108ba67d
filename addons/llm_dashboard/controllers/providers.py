"""Providers, for LLM managers: the list, and a form to create or edit one. The API key is
write-only: its field is always empty, a key typed in replaces the stored one, an empty field
keeps it, and "remove the key" removes it; no page ever shows it (``api_key_set`` only).

::

    GET  /web/providers                  ?saved=<id>: says it was saved
    GET  /web/providers/new, POST /web/providers/new
    GET  /web/providers/{id}, POST /web/providers/{id}

The forms are checked by the API's ``ProviderIn`` / ``ProviderPatch``.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from addons.llm_thread.controllers.providers import (
    ProviderIn,
    ProviderPatch,
    provider_out,
    provider_values,
)
from core.exceptions import UserError
from core.http import render, visible_record

from .common import ManagerPage, field_errors, form_refusal, without_blanks

router = APIRouter()
PROVIDER = "llm.provider"
LABELS = {
    "name": "Name",
    "service": "Service",
    "api_base": "API base URL",
    "api_key": "API key",
    "timeout": "Timeout",
    "active": "Active",
}
FORM = "llm_dashboard/provider_form.html"


def _services(env) -> list[tuple[str, str]]:
    providers = env[PROVIDER]
    return providers._fields["service"].get_values(providers)


@router.get("/web/providers")
def providers_page(request: Request, user: ManagerPage, saved: int | None = None) -> Response:
    with user.environment(readonly=True) as env:
        providers = env[PROVIDER].search([])
        rows = [provider_out(provider) for provider in providers]
        queues = {
            queue.provider_id.id: queue.id for queue in env["llm.generation.queue"].search([])
        }
        services = dict(_services(env))
    saved_name = next((row.name for row in rows if row.id == saved), None)
    return render(
        request,
        "llm_dashboard/providers.html",
        providers=rows,
        queues=queues,
        services=services,
        saved=saved_name,
    )


def _form_page(
    request: Request,
    user,
    provider_id: int | None,
    values: dict,
    errors: dict[str, str] | None = None,
    key_set: bool = False,
) -> Response:
    with user.environment(readonly=True) as env:
        services = _services(env)
    return render(
        request,
        FORM,
        status_code=422 if errors else 200,
        provider_id=provider_id,
        values=values,
        errors=errors or {},
        key_set=key_set,
        services=services,
    )


def _submitted(name, service, api_base, timeout, active) -> dict:
    return {
        "name": name,
        "service": service,
        "api_base": api_base,
        "timeout": timeout,
        "active": active,
    }


@router.get("/web/providers/new")
def new_provider_page(request: Request, user: ManagerPage) -> Response:
    values = _submitted("", "openai", "", "60", True)
    return _form_page(request, user, None, values)


@router.post("/web/providers/new")
def create_provider(
    request: Request,
    user: ManagerPage,
    name: Annotated[str, Form(max_length=1024)] = "",
    service: Annotated[str, Form(max_length=64)] = "",
    api_base: Annotated[str, Form(max_length=4096)] = "",
    api_key: Annotated[str, Form(max_length=4096)] = "",
    timeout: Annotated[str, Form(max_length=64)] = "",
    active: Annotated[bool, Form()] = False,
) -> Response:
    values = _submitted(name, service, api_base, timeout, active)
    try:
        body = ProviderIn.model_validate(without_blanks({**values, "api_key": api_key}))
    except pydantic.ValidationError as error:
        return _form_page(request, user, None, values, field_errors(error, LABELS))
    try:
        with user.environment() as env:
            provider = env[PROVIDER].create(provider_values(body, exclude_unset=False))
            provider_id = provider.id
    except UserError as error:
        return _form_page(request, user, None, values, {"form": form_refusal(error)})
    return RedirectResponse(f"/web/providers?saved={provider_id}", status_code=303)


@router.get("/web/providers/{provider_id}")
def edit_provider_page(request: Request, user: ManagerPage, provider_id: int) -> Response:
    with user.environment(readonly=True) as env:
        provider = provider_out(visible_record(env, PROVIDER, provider_id, "Provider"))
    values = _submitted(
        provider.name,
        provider.service,
        provider.api_base or "",
        f"{provider.timeout:g}",
        provider.active,
    )
    return _form_page(request, user, provider_id, values, key_set=provider.api_key_set)


@router.post("/web/providers/{provider_id}")
def update_provider(
    request: Request,
    user: ManagerPage,
    provider_id: int,
    name: Annotated[str, Form(max_length=1024)] = "",
    service: Annotated[str, Form(max_length=64)] = "",
    api_base: Annotated[str, Form(max_length=4096)] = "",
    api_key: Annotated[str, Form(max_length=4096)] = "",
    remove_key: Annotated[bool, Form()] = False,
    timeout: Annotated[str, Form(max_length=64)] = "",
    active: Annotated[bool, Form()] = False,
) -> Response:
    """Save the form: every field of it, the key only when one was typed in (or removed)."""
    values = _submitted(name, service, api_base, timeout, active)
    with user.environment(readonly=True) as env:
        key_set = provider_out(visible_record(env, PROVIDER, provider_id, "Provider")).api_key_set
    try:
        body = ProviderPatch.model_validate({**without_blanks(values), "api_key": api_key or None})
    except pydantic.ValidationError as error:
        errors = field_errors(error, LABELS)
        return _form_page(request, user, provider_id, values, errors, key_set)
    if not body.name or not body.service:
        errors = {
            name: f"{LABELS[name]}: required."
            for name in ("name", "service")
            if not getattr(body, name)
        }
        return _form_page(request, user, provider_id, values, errors, key_set)
    fields = body.model_dump(exclude={"api_key"}, exclude_none=True)
    fields["api_base"] = body.api_base or False  # an emptied field clears it
    if remove_key:
        fields["api_key"] = False
    elif body.api_key is not None:
        fields["api_key"] = body.api_key.get_secret_value()
    try:
        with user.environment() as env:
            visible_record(env, PROVIDER, provider_id, "Provider").write(fields)
    except UserError as error:
        refusal = {"form": form_refusal(error)}
        return _form_page(request, user, provider_id, values, refusal, key_set)
    return RedirectResponse(f"/web/providers?saved={provider_id}", status_code=303)
