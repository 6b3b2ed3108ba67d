"""Providers, for LLM managers: their configuration, and the API key write-only.

::

    GET    /api/providers           every provider (``api_key_set`` says whether it has one)
    POST   /api/providers           {"name", "service", "api_base"?, "api_key"?, "timeout"?}
    GET    /api/providers/{id}
    PATCH  /api/providers/{id}      any of the fields; "api_key": "" removes the key
    DELETE /api/providers/{id}      (refused while threads use it)

No answer ever carries the key: it is sent once, stored encrypted, and only the provider's
requests use it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, SecretStr

from core.http import Principal, require_group, visible_record

MANAGER = "llm_thread.group_llm_manager"
Manager = Annotated[Principal, Depends(require_group(MANAGER, "LLM managers"))]

router = APIRouter(prefix="/api/providers", tags=["providers"])


class ProviderIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    service: str = Field(description="openai, anthropic or ollama (or one an addon adds)")
    api_base: str | None = Field(None, max_length=2048)
    api_key: SecretStr | None = Field(None, description="Write-only: never returned")
    timeout: float | None = Field(None, gt=0, le=3600)
    active: bool = True


class ProviderPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=128)
    service: str | None = None
    api_base: str | None = Field(None, max_length=2048)
    api_key: SecretStr | None = Field(None, description="Write-only; an empty one removes it")
    timeout: float | None = Field(None, gt=0, le=3600)
    active: bool | None = None


class ProviderOut(BaseModel):
    id: int
    name: str
    service: str
    api_base: str | None
    timeout: float
    active: bool
    api_key_set: bool


def provider_out(provider) -> ProviderOut:
    return ProviderOut(
        id=provider.id,
        name=provider.name,
        service=provider.service,
        api_base=provider.api_base or None,
        timeout=provider.timeout,
        active=provider.active,
        api_key_set=bool(provider.api_key),
    )


def provider_values(body: BaseModel, exclude_unset: bool) -> dict[str, Any]:
    """The record's values of a ``ProviderIn`` / ``ProviderPatch``: the key as its plain text
    (an empty one: removed)."""
    values = body.model_dump(exclude_unset=exclude_unset, exclude_none=not exclude_unset)
    if "api_key" in values:
        key = values["api_key"]
        values["api_key"] = (key.get_secret_value() if key is not None else "") or False
    return values


@router.get("")
def list_providers(user: Manager) -> list[ProviderOut]:
    with user.environment(readonly=True) as env:
        return [provider_out(p) for p in env["llm.provider"].search([])]


@router.post("", status_code=201)
def create_provider(body: ProviderIn, user: Manager) -> ProviderOut:
    with user.environment() as env:
        return provider_out(env["llm.provider"].create(provider_values(body, exclude_unset=False)))


@router.get("/{provider_id}")
def read_provider(provider_id: int, user: Manager) -> ProviderOut:
    with user.environment(readonly=True) as env:
        return provider_out(visible_record(env, "llm.provider", provider_id, "Provider"))


@router.patch("/{provider_id}")
def update_provider(provider_id: int, body: ProviderPatch, user: Manager) -> ProviderOut:
    with user.environment() as env:
        provider = visible_record(env, "llm.provider", provider_id, "Provider")
        values = provider_values(body, exclude_unset=True)
        if values:
            provider.write(values)
        return provider_out(provider)


@router.delete("/{provider_id}", status_code=204)
def delete_provider(provider_id: int, user: Manager) -> None:
    with user.environment() as env:
        visible_record(env, "llm.provider", provider_id, "Provider").unlink()
