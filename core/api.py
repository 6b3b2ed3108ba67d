"""Method decorators, as in Odoo's ``odoo.api``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def depends(*paths: str) -> Callable[[F], F]:
    """Declare what a compute method reads: field names or dotted paths (``'thread_id.name'``).

    Stored computed fields are recomputed when one of these changes; cached values of
    non-stored ones are dropped.
    """

    def decorate(method: F) -> F:
        method._depends = paths  # type: ignore[attr-defined]
        return method

    return decorate


def constrains(*field_names: str) -> Callable[[F], F]:
    """Run the method after create/write touching these fields; it raises ValidationError to
    refuse the change (which is then rolled back)."""

    def decorate(method: F) -> F:
        method._constrains = field_names  # type: ignore[attr-defined]
        return method

    return decorate


def model(method: F) -> F:
    """Mark a method that works on the model rather than on records (called on an empty
    recordset, e.g. ``env['llm.generation.job'].cleanup_old_jobs()``)."""
    method._api_model = True  # type: ignore[attr-defined]
    return method


def model_create_multi(method: F) -> F:
    """Let a ``create`` override always receive a list of dicts, whether the caller passed one
    dict or a list."""

    def create(self, vals_list):
        if isinstance(vals_list, dict):
            vals_list = [vals_list]
        return method(self, vals_list)

    create.__name__ = method.__name__
    create.__doc__ = method.__doc__
    create._api_model = True  # type: ignore[attr-defined]
    return create  # type: ignore[return-value]
