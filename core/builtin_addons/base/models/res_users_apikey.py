"""API keys: bearer tokens that users create for their scripts and revoke.

A key is shown once, when it is created (``llmj_`` + 43 random characters); only its SHA-256
digest is stored, with a short prefix that lets people tell their keys apart. A random key of
that length needs no slow hash: nobody can guess it from its digest.
"""

from __future__ import annotations

import hashlib
import secrets

from core import api, fields, models
from core.exceptions import ValidationError

PREFIX = "llmj_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class UsersApiKey(models.Model):
    _name = "res.users.apikey"
    _description = "API key"
    _order = "id desc"

    name = fields.Char(required=True, help="What the key is for, e.g. 'nightly batch script'")
    user_id = fields.Many2one("res.users", required=True, ondelete="cascade", index=True)
    key_digest = fields.Char(required=True, index=True, copy=False)
    hint = fields.Char(help="The key's first characters, to tell keys apart")

    @api.model
    def generate(self, name: str) -> tuple[UsersApiKey, str]:
        """A new key for the current user: the record and the key itself, which is shown
        this once and never stored."""
        if not (name or "").strip():
            raise ValidationError("An API key needs a name that says what it is for.")
        key = PREFIX + secrets.token_urlsafe(32)
        record = self.sudo().create(
            {
                "name": name.strip(),
                "user_id": self.env.uid,
                "key_digest": digest(key),
                "hint": key[: len(PREFIX) + 6],
            }
        )
        return record.with_env(self.env), key

    @api.model
    def user_for_key(self, key: str) -> int | None:
        """The id of the active user who owns ``key``, or None."""
        if not key.startswith(PREFIX):
            return None
        found = self.sudo().search([("key_digest", "=", digest(key))], limit=1)
        if not found or not found.user_id.active:
            return None
        return found.user_id.id
