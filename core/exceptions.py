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

    DatabaseUnavailable       the database could not be reached or was too busy to answer in
                              time (connection lost or refused, pool exhausted, a lock waited
                              for too long): the unit of work was rolled back and may be retried

UserError and its children are meant to be shown to people; RegistryError is for the
developer or operator starting the program; DatabaseUnavailable is back-pressure for the code
doing the work, which waits and tries again.
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


class DatabaseUnavailable(Exception):
    """The database could not be reached, or was too busy to answer in time. The transaction
    was rolled back: nothing of it is saved, and the same unit of work may be tried again.
    The driver's error (which may quote SQL and its parameters) is the ``__cause__``, for the
    server log only; the message is for people."""

    def __init__(self, reason: str):
        super().__init__(
            f"The database is unavailable for the moment ({reason}); nothing was saved. "
            "Try again shortly."
        )
        self.reason = reason
