"""Where the ORM used to part from Odoo or from itself: negated domains on empty fields, a
declared ``_table``, ``selection_add`` position markers, aggregate types on both databases,
JSON without NaN, and a missing user."""

import math

import pytest
import sqlalchemy as sa

from core import MissingError, RegistryError, ValidationError

from .addon_factory import write_addon


@pytest.fixture
def family(env):
    """A parent, a child of it, and an orphan (no parent)."""
    partners = env["test.partner"]
    parent = partners.create({"name": "Parent", "age": 50, "score": 1.5})
    child = partners.create({"name": "Child", "age": 10, "score": 2, "parent_id": parent.id})
    orphan = partners.create({"name": "Orphan"})  # no parent, no age, no email
    return parent, child, orphan


@pytest.mark.parametrize(
    "term",
    [
        ("parent_id", "in", "PARENT"),
        ("parent_id", "=", "PARENT"),
        ("parent_id.name", "=", "Parent"),
        ("parent_id.name", "ilike", "par"),
        ("email", "=", "x@y"),
        ("email", "like", "x"),
        ("age", ">", 5),
        ("age", "in", [10, 50]),
    ],
)
def test_a_negated_domain_is_the_complement_empty_fields_included(env, family, term):
    """Odoo keeps the records whose field is empty: ['!', term] is everything term is not."""
    parent, _child, _orphan = family
    path, operator, value = term
    if value == "PARENT":
        value = [parent.id] if operator == "in" else parent.id
    partners = env["test.partner"]
    matching = partners.search([(path, operator, value)])
    complement = partners.search(["!", (path, operator, value)])
    assert set(matching.ids) | set(complement.ids) == set(partners.search([]).ids)
    assert not set(matching.ids) & set(complement.ids)


def test_negation_of_a_combination_keeps_empty_rows(env, family):
    parent, child, orphan = family
    partners = env["test.partner"]
    found = partners.search(["!", "&", ("parent_id", "=", parent.id), ("age", "=", 10)])
    assert set(found.ids) == {parent.id, orphan.id}
    assert partners.search(["!", "!", ("parent_id", "=", parent.id)]) == child


def test_a_declared_table_is_used(make_registry, tmp_path):
    addon = write_addon(
        tmp_path,
        "tabled",
        models="""
        class Legacy(models.Model):
            _name = "tmp.legacy"
            _table = "legacy_things"

            name = fields.Char()
        """,
    )
    registry = make_registry(addons_path=[tmp_path], addons=[addon])
    with registry.environment() as env:
        env["tmp.legacy"].create({"name": "old"})
        rows = env.cr.execute(sa.text("SELECT name FROM legacy_things")).scalars().all()
        assert rows == ["old"]


def test_selection_add_markers_place_new_values(make_registry, tmp_path):
    base = write_addon(
        tmp_path,
        "sel_base",
        models="""
        class Thing(models.Model):
            _name = "tmp.selthing"
            state = fields.Selection([("a", "A"), ("b", "B")])
        """,
    )
    extension = write_addon(
        tmp_path,
        "sel_ext",
        depends=[base],
        models="""
        class Thing(models.Model):
            _inherit = "tmp.selthing"
            state = fields.Selection(selection_add=[("c", "C"), ("b",), ("d", "D")])
        """,
    )
    registry = make_registry(addons_path=[tmp_path], addons=[extension])
    with registry.environment() as env:
        selection = env["tmp.selthing"]._fields["state"].selection
        assert [key for key, _label in selection] == ["a", "c", "b", "d"]


def test_a_selection_marker_naming_no_value_is_a_clear_error(make_registry, tmp_path):
    base = write_addon(
        tmp_path,
        "sel_base",
        models="""
        class Thing(models.Model):
            _name = "tmp.selbad"
            state = fields.Selection([("a", "A")])
        """,
    )
    extension = write_addon(
        tmp_path,
        "sel_bad",
        depends=[base],
        models="""
        class Thing(models.Model):
            _inherit = "tmp.selbad"
            state = fields.Selection(selection_add=[("c", "C"), ("zz",)])
        """,
    )
    with pytest.raises(RegistryError, match=r"Field 'state' of 'tmp.selbad': .*\('zz',\)"):
        make_registry(addons_path=[tmp_path], addons=[extension])


def test_aggregates_have_one_type_on_both_databases(env, family):
    groups = env["test.partner"].read_group(
        [("age", "!=", False)],
        [],
        ["__count", "age:avg", "age:sum", "age:max", "score:avg", "last_seen:max"],
    )
    [group] = groups
    assert type(group["age:avg"]) is float and group["age:avg"] == 30.0
    assert type(group["age:sum"]) is int and group["age:sum"] == 60
    assert type(group["age:max"]) is int and type(group["__count"]) is int
    assert type(group["score:avg"]) is float and group["score:avg"] == 1.75
    assert group["last_seen:max"] is None  # no value: None, not 0 or "None"


def test_json_refuses_nan_and_infinities(env):
    partner = env["test.partner"].create({"name": "P"})
    for bad in (math.nan, {"weights": [1.0, math.inf]}, -math.inf):
        with pytest.raises(ValidationError, match="Field 'data' of 'test.partner' expects JSON"):
            partner.write({"data": bad})
    partner.write({"data": {"weights": [1.0, 2.5]}})
    assert partner.data == {"weights": [1.0, 2.5]}


def test_a_missing_user_is_a_clear_error(registry):
    with (
        pytest.raises(MissingError, match="No user has id 4242"),
        registry.environment(user=4242) as env,
    ):
        env["test.partner"].search([])
    with (
        pytest.raises(ValidationError, match="A user is a res.users id or record"),
        registry.environment(user="alice"),
    ):
        pass
