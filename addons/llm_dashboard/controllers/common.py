"""What the dashboard's pages share: who may see the manager pages, and turning the refusals
of a form's input into messages shown next to its fields."""

from __future__ import annotations

from typing import Annotated

import pydantic
from fastapi import Depends

from core.exceptions import AccessError, MissingError, UserError
from core.http import WebUser, require_page_group

MANAGER = "llm_thread.group_llm_manager"
ManagerPage = Annotated[WebUser, Depends(require_page_group(MANAGER, "LLM managers"))]
JOB = "llm.generation.job"


def field_errors(error: pydantic.ValidationError, labels: dict[str, str]) -> dict[str, str]:
    """The first message per field of a form, named by its label: ``{"max_concurrent_jobs":
    "Limit: must be at least 1"}``."""
    errors: dict[str, str] = {}
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "form"
        message = item["msg"].removeprefix("Value error, ")
        errors.setdefault(name, f"{labels.get(name, name)}: {message}.")
    return errors


def form_refusal(error: UserError) -> str:
    """The message of a refusal a form shows on its page (bad values, a record's state); the
    others (not allowed, gone) are answered with their error pages."""
    if isinstance(error, AccessError | MissingError):
        raise error
    return error.message


def without_blanks(values: dict[str, object]) -> dict[str, object]:
    """A form's fields with the empty ones left out (an empty field means "not given")."""
    return {
        name: value.strip() if isinstance(value, str) else value
        for name, value in values.items()
        if not (isinstance(value, str) and not value.strip())
    }
