"""Schema sync on a database that already has rows: a field added by a new addon (or a new
version of one) gets a column, and the rows already there get the field's default, so a
required field is never empty on old records."""

from __future__ import annotations

from .addon_factory import write_addon


def test_a_column_added_to_a_table_with_rows_takes_the_fields_default(tmp_path, make_registry):
    base = write_addon(
        tmp_path,
        "notes",
        models="""
        class Note(models.Model):
            _name = "x.note"
            name = fields.Char()
        """,
    )
    with make_registry(addons_path=[tmp_path], addons=[base]).environment() as env:
        env["x.note"].create([{"name": "old"}, {"name": "older"}])
    extension = write_addon(
        tmp_path,
        "notes_mode",
        depends=[base],
        models="""
        class Note(models.Model):
            _inherit = "x.note"
            mode = fields.Selection([("a", "A"), ("b", "B")], default="b", required=True)
            size = fields.Integer(default=1000)
            wait = fields.Float(default=60.0)
            flag = fields.Boolean(default=True)
            stamp = fields.Char(default=lambda self: "computed")
            plain = fields.Char()
        """,
    )
    registry = make_registry(addons_path=[tmp_path], addons=[extension])
    with registry.environment() as env:
        notes = env["x.note"].search([], order="id")
        assert notes.mapped("mode") == ["b", "b"]
        assert notes.mapped("size") == [1000, 1000]
        assert notes.mapped("wait") == [60.0, 60.0]
        assert notes.mapped("flag") == [True, True]
        assert notes.mapped("stamp") == [False, False]  # a function's default is per record
        assert notes.mapped("plain") == [False, False]
        new = env["x.note"].create({"name": "new"})
        assert (new.mode, new.stamp) == ("b", "computed")
