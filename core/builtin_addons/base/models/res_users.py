"""Users: login, groups, and a password hash for the web surface (scrypt, never clear text)."""

import base64
import hashlib
import hmac
import secrets

import sqlalchemy as sa

from core import api, fields, models
from core.environment import SUPERUSER_ID
from core.exceptions import AccessError, ValidationError

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """An scrypt hash with a random salt, as ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    encode = base64.b64encode
    return (
        "scrypt${n}${r}${p}$".format(**_SCRYPT)
        + f"{encode(salt).decode()}${encode(digest).decode()}"
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        _scheme, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


class Users(models.Model):
    _name = "res.users"
    _description = "User"
    _order = "login"
    _sql_constraints = [("login_unique", "unique(login)", "Another user already has this login.")]

    name = fields.Char(required=True)
    login = fields.Char(required=True, index=True)
    active = fields.Boolean(default=True)
    groups_id = fields.Many2many(
        "res.groups", "res_groups_users_rel", "uid", "gid", string="Groups"
    )
    password_hash = fields.Char(copy=False, help="scrypt hash; set it with set_password()")

    def _register_hook(self):
        """Make sure the superuser exists (uid 1, used by crons and administration)."""
        super()._register_hook()
        if not self.browse(SUPERUSER_ID).exists():
            table = self._table_obj
            self.env.cr.execute(
                table.insert().values(
                    id=SUPERUSER_ID, name="System", login="__system__", active=True
                )
            )
            if self.env.cr.dialect == "postgresql":
                # The explicit id bypassed the serial sequence: move it past the superuser.
                self.env.cr.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )

    @api.constrains("login")
    def _check_login(self):
        for user in self:
            if not (user.login or "").strip():
                raise ValidationError(
                    "A user needs a login, the name they sign in with; it cannot be blank."
                )

    def set_password(self, password: str) -> None:
        if not password or len(password) < 8:
            raise ValidationError("A password needs at least 8 characters.")
        problem = fields.text_problem(password)  # scrypt hashes its UTF-8 bytes
        if problem:
            raise ValidationError(f"A password cannot hold {problem}.")
        self.write({"password_hash": hash_password(password)})

    @api.model
    def authenticate(self, login: str, password: str) -> int:
        """The uid for these credentials; AccessError when they do not match."""
        user = self.sudo().search([("login", "=", login), ("active", "=", True)], limit=1)
        if not user or not user.password_hash or not verify_password(password, user.password_hash):
            raise AccessError("Wrong login or password.")
        return user.id

    def has_group(self, xml_id: str) -> bool:
        """Whether the user is in the group (directly or through an implied group)."""
        self.ensure_one()
        return self.id == SUPERUSER_ID or xml_id in self._group_xml_ids()

    def is_manager(self) -> bool:
        """Whether the user manages the system: sees the manager pages and forms. Here the
        administrators; addons add the groups of their managers (``_inherit``)."""
        return self.has_group("base.group_system")

    def _group_xml_ids(self) -> frozenset[str]:
        self.ensure_one()
        groups = self.env["res.groups"].sudo()
        closure = groups._closure(self.sudo().groups_id.ids)
        return frozenset(g for g in groups.browse(sorted(closure)).mapped("xml_id") if g)
