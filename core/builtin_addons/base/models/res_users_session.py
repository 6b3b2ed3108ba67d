"""Login sessions for the web surface, and the throttle on failed logins.

A session is a random token in an HttpOnly cookie; the database keeps its SHA-256 digest
only, so a copy of the database opens no session. Sessions end at logout or after
``SESSION_DAYS`` without use.

Failed logins are rows too, so the throttle holds across every process that serves the API:
``MAX_FAILURES`` failures for one login (or from one address) within ``WINDOW`` refuse further
attempts until the window has passed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from core import api, fields, models

SESSION_DAYS = 7
MAX_FAILURES = 5
WINDOW = dt.timedelta(minutes=5)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UsersSession(models.Model):
    _name = "res.users.session"
    _description = "Login session"

    user_id = fields.Many2one("res.users", required=True, ondelete="cascade", index=True)
    token_digest = fields.Char(required=True, index=True, copy=False)
    expires_at = fields.Datetime(required=True)

    @api.model
    def open(self, uid: int) -> str:
        """A new session for ``uid``; returns its token (the cookie's value)."""
        token = secrets.token_urlsafe(32)
        self.sudo().create(
            {"user_id": uid, "token_digest": _digest(token), "expires_at": self._expiry()}
        )
        return token

    @api.model
    def user_for_token(self, token: str) -> int | None:
        """The id of the session's active user (the session's life is extended), or None."""
        session = self.sudo().search(
            [("token_digest", "=", _digest(token)), ("expires_at", ">", fields.Datetime.now())],
            limit=1,
        )
        if not session or not session.user_id.active:
            return None
        if session.expires_at < self._expiry() - dt.timedelta(hours=1):
            session.expires_at = self._expiry()  # at most one write an hour per session
        return session.user_id.id

    @api.model
    def close(self, token: str) -> None:
        self.sudo().search([("token_digest", "=", _digest(token))]).unlink()

    @staticmethod
    def _expiry() -> dt.datetime:
        return fields.Datetime.now() + dt.timedelta(days=SESSION_DAYS)


class LoginFailure(models.Model):
    _name = "res.users.login.failure"
    _description = "Failed login"

    login = fields.Char(index=True)
    address = fields.Char(index=True, help="The client's IP address")

    @api.model
    def retry_after(self, login: str, address: str) -> float | None:
        """Seconds until another attempt for ``login`` from ``address`` is allowed, or None
        when it is allowed now."""
        since = fields.Datetime.now() - WINDOW
        failures = self.sudo().search(
            ["|", ("login", "=", login), ("address", "=", address), ("create_date", ">", since)],
            order="create_date desc",
        )
        by_login = failures.filtered(lambda f: f.login == login)
        by_address = failures.filtered(lambda f: f.address == address)
        for group in (by_login, by_address):
            if len(group) >= MAX_FAILURES:
                oldest = group[MAX_FAILURES - 1].create_date
                return max(1.0, (oldest + WINDOW - fields.Datetime.now()).total_seconds())
        return None

    @api.model
    def record(self, login: str, address: str) -> None:
        self.sudo().create({"login": login, "address": address})

    @api.model
    def forget(self, login: str) -> None:
        """A successful login clears the failures of its login."""
        self.sudo().search([("login", "=", login)]).unlink()
