"""Finding the records a request names, as its user sees them."""

from __future__ import annotations

from core.models import BaseModel

from .errors import not_found


def visible_record(env, model_name: str, record_id: int, label: str) -> BaseModel:
    """The record, searched under the user's record rules: a record the user may not see is
    answered like one that does not exist (404), so that its existence does not leak."""
    record = env[model_name].search([("id", "=", record_id)], limit=1)
    if not record:
        raise not_found(f"{label} {record_id}")
    return record
