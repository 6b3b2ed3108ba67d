"""Every error the framework raises on purpose.

The hierarchy::

    UserError                 an operation was refused; the message says why and what to do
     ├── ValidationError      bad input: unknown field, wrong type, missing required value,
     │    │                   failed constraint
     │    └── DomainError     a search domain is malformed or names an unknown field/operator
     ├── AccessError          the current user may not do this (names model and operation only)
     └── MissingError         a record does not exist (deleted, or never did)

    RegistryError             the code or configuration cannot be loaded: broken manifest,
                              missing or cyclic dependency, bad model inheritance, unknown
                              model, a schema change that would destroy data

UserError and its children are meant to be shown to people; RegistryError is for the
developer or operator starting the program.
"""

from __future__ import annotations


class UserError(Exception):
    """An operation was refused; the message is meant for the person who asked for it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(UserError):
    """Input that cannot be stored: unknown field, wrong type, missing value, constraint."""


class DomainError(ValidationError):
    """A search domain that cannot be compiled; the message names the offending term."""


class AccessError(UserError):
    """Denied by access rights or record rules. Never carries the protected data."""


class MissingError(UserError):
    """The records do not exist (any more)."""


class RegistryError(Exception):
    """Addons, models or the database schema cannot be set up as declared."""
