"""Model inheritance across addons: extension, super() order, field merging, copies."""

import pytest

from core import RegistryError, ValidationError

from .addon_factory import write_addon

BASE_MODELS = """
class Thing(models.Model):
    _name = "tmp.thing"
    _description = "Thing"

    name = fields.Char(required=True)
    state = fields.Selection([("new", "New"), ("done", "Done")], default="new")
    calls = []

    def hello(self):
        return ["base"]

    @api.model_create_multi
    def create(self, vals_list):
        type(self).calls.append(("base", len(vals_list)))
        return super().create(vals_list)
"""

EXTENSION_MODELS = """
class Thing(models.Model):
    _inherit = "tmp.thing"

    colour = fields.Char(default="blue")
    state = fields.Selection(selection_add=[("archived", "Archived")], default="done")

    def hello(self):
        return super().hello() + ["extension"]

    @api.model_create_multi
    def create(self, vals_list):
        type(self).calls.append(("extension", len(vals_list)))
        return super().create(vals_list)
"""


@pytest.fixture
def addons(tmp_path):
    base = write_addon(tmp_path, "thing_base", models=BASE_MODELS)
    extension = write_addon(tmp_path, "thing_ext", depends=[base], models=EXTENSION_MODELS)
    return tmp_path, base, extension


def test_extension_adds_fields_and_overrides_run_in_dependency_order(make_registry, addons):
    folder, _base, extension = addons
    registry = make_registry(addons_path=[folder], addons=[extension])
    with registry.environment() as env:
        thing = env["tmp.thing"].create({"name": "widget"})
        assert thing.hello() == ["base", "extension"]
        assert type(thing).calls[-2:] == [("extension", 1), ("base", 1)]
        assert thing.colour == "blue"
        assert thing.state == "done"
        thing.state = "archived"
        assert env["tmp.thing"]._fields["state"].selection == [
            ("new", "New"),
            ("done", "Done"),
            ("archived", "Archived"),
        ]


def test_base_addon_alone_has_neither_field_nor_override(make_registry, addons):
    folder, base, _extension = addons
    registry = make_registry(addons_path=[folder], addons=[base])
    with registry.environment() as env:
        thing = env["tmp.thing"].create({"name": "plain"})
        assert thing.hello() == ["base"]
        assert "colour" not in env["tmp.thing"]._fields
        assert thing.state == "new"


def test_adding_an_extension_adds_its_column_to_an_existing_database(make_registry, addons):
    folder, base, extension = addons
    with make_registry(addons_path=[folder], addons=[base]).environment() as env:
        env["tmp.thing"].create({"name": "old"})
    registry = make_registry(addons_path=[folder], addons=[extension])
    with registry.environment() as env:
        old = env["tmp.thing"].search([("name", "=", "old")])
        assert old.colour == "blue"  # existing rows get a constant default, as in Odoo
        old.colour = "red"
        assert env["tmp.thing"].search([("colour", "=", "red")]) == old


def test_an_extension_adds_a_reference_and_a_unique_constraint_to_an_existing_table(
    make_registry, addons
):
    """SQLite cannot add a constraint to a table in place (a raw NotImplementedError from
    Alembic before): the reference and the unique constraint arrive on both databases."""
    folder, base, _extension = addons
    with make_registry(addons_path=[folder], addons=[base]).environment() as env:
        env["tmp.thing"].create([{"name": "a"}, {"name": "b"}])
    owner = write_addon(
        folder,
        "thing_owner",
        depends=[base],
        models="""
class Owner(models.Model):
    _name = "tmp.owner"
    _description = "Owner"
    name = fields.Char()

class Thing(models.Model):
    _inherit = "tmp.thing"
    _sql_constraints = [("name_unique", "unique(name)", "Things have unique names.")]
    owner_id = fields.Many2one("tmp.owner", ondelete="cascade", index=True)
""",
    )
    registry = make_registry(addons_path=[folder], addons=[owner])
    with registry.environment() as env:
        person = env["tmp.owner"].create({"name": "Ada"})
        things = env["tmp.thing"].search([])
        things.write({"owner_id": person.id})
        with (
            pytest.raises(ValidationError, match="Things have unique names"),
            env.cr.savepoint(),
        ):
            env["tmp.thing"].create({"name": "a"})
        person.unlink()  # the reference cascades
        assert not env["tmp.thing"].search([])
    with make_registry(addons_path=[folder], addons=[owner]).environment() as env:
        env["tmp.thing"].create({"name": "c"})  # a later start finds nothing left to do
        with pytest.raises(ValidationError, match="Things have unique names"):
            env["tmp.thing"].create({"name": "c"})


def test_prototype_inheritance_copies_fields_into_a_new_model(make_registry, tmp_path):
    base = write_addon(tmp_path, "proto_base", models=BASE_MODELS)
    copy = write_addon(
        tmp_path,
        "proto_copy",
        depends=[base],
        models="""
class Gadget(models.Model):
    _name = "tmp.gadget"
    _inherit = "tmp.thing"
    _description = "Gadget"

    weight = fields.Float()

    def hello(self):
        return super().hello() + ["gadget"]
""",
    )
    registry = make_registry(addons_path=[tmp_path], addons=[copy])
    with registry.environment() as env:
        gadget = env["tmp.gadget"].create({"name": "g", "weight": 2})
        assert gadget.hello() == ["base", "gadget"]
        assert env["tmp.thing"].search_count([]) == 0
        assert env["tmp.gadget"]._table == "tmp_gadget"


def test_extending_an_unknown_model_is_a_clear_error(make_registry, tmp_path):
    bad = write_addon(
        tmp_path,
        "orphan",
        models="""
class Orphan(models.Model):
    _inherit = "no.such.model"
""",
    )
    with pytest.raises(RegistryError, match="extends model 'no.such.model'.*depends"):
        make_registry(addons_path=[tmp_path], addons=[bad])


def test_changing_a_field_type_is_a_clear_error(make_registry, tmp_path):
    base = write_addon(tmp_path, "typed", models=BASE_MODELS)
    bad = write_addon(
        tmp_path,
        "retyped",
        depends=[base],
        models="""
class Thing(models.Model):
    _inherit = "tmp.thing"
    name = fields.Integer()
""",
    )
    with pytest.raises(RegistryError, match="'name' of 'tmp.thing' is a Char and is redeclared"):
        make_registry(addons_path=[tmp_path], addons=[bad])


def test_defining_a_model_twice_is_a_clear_error(make_registry, tmp_path):
    base = write_addon(tmp_path, "first", models=BASE_MODELS)
    bad = write_addon(tmp_path, "second", depends=[base], models=BASE_MODELS)
    with pytest.raises(RegistryError, match="'tmp.thing' is defined twice"):
        make_registry(addons_path=[tmp_path], addons=[bad])


def test_destructive_schema_change_is_refused(make_registry, tmp_path):
    old = write_addon(
        tmp_path,
        "schema_v1",
        models="""
class Doc(models.Model):
    _name = "tmp.doc"
    size = fields.Char()
""",
    )
    new = write_addon(
        tmp_path,
        "schema_v2",
        models="""
class Doc(models.Model):
    _name = "tmp.doc"
    size = fields.Integer()
""",
    )
    with make_registry(addons_path=[tmp_path], addons=[old]).environment() as env:
        env["tmp.doc"].create({"size": "large"})
    with pytest.raises(RegistryError, match=r"could lose data.*tmp_doc\.size"):
        make_registry(addons_path=[tmp_path], addons=[new])
    with make_registry(addons_path=[tmp_path], addons=[old]).environment() as env:
        assert env["tmp.doc"].search([]).mapped("size") == ["large"]
