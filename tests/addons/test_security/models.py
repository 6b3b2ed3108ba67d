from core import fields, models


class Note(models.Model):
    _name = "test.note"
    _description = "A note owned by a user"

    name = fields.Char(required=True)
    user_id = fields.Many2one("res.users", default=lambda self: self.env.uid, required=True)


class Vault(models.Model):
    _name = "test.vault"
    _description = "A model with no access line: only the superuser reaches it"

    name = fields.Char()


class Catalog(models.Model):
    _name = "test.catalog"
    _description = "Readable by users; only the superuser writes it"

    name = fields.Char()
