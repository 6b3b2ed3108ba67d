"""An Odoo-style addon framework on SQLAlchemy 2.

::

    from core import Registry, models, fields, api

    registry = Registry("sqlite:///var/llmjobs.db", addons_path=["addons"])
    with registry.environment() as env:              # superuser; commit or roll back
        env["x.partner"].create({"name": "Ada"})
"""

from . import api, fields, models
from .environment import SUPERUSER_ID, Environment
from .exceptions import (
    AccessError,
    DatabaseUnavailable,
    DomainError,
    MissingError,
    RegistryError,
    UserError,
    ValidationError,
)
from .fields import Command
from .registry import Registry

__all__ = [
    "SUPERUSER_ID",
    "AccessError",
    "Command",
    "DatabaseUnavailable",
    "DomainError",
    "Environment",
    "MissingError",
    "Registry",
    "RegistryError",
    "UserError",
    "ValidationError",
    "api",
    "fields",
    "models",
]
