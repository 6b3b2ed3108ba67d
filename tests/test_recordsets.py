"""Recordset API: create, browse, search, read, write, unlink and set operations."""

import datetime as dt

import pytest

from core import Command, MissingError, ValidationError

from .statements import statements


@pytest.fixture
def partners(env):
    return env["test.partner"].create(
        [
            {"name": "Ada", "age": 36, "email": "ada@example.com"},
            {"name": "Grace", "age": 85, "kind": "person"},
            {"name": "Acme", "kind": "company", "score": 4.5},
        ]
    )


def test_create_list_returns_records_in_order_with_defaults(partners):
    assert [p.name for p in partners] == ["Ada", "Grace", "Acme"]
    assert partners[0].active is True
    assert partners[2].kind == "company"
    assert partners[1].email is False
    assert partners[0].create_uid.id == 1
    assert partners[0].create_date.tzinfo is not None


def test_create_batches_into_one_insert(env, registry):
    with statements(registry) as seen:
        env["test.tag"].create([{"name": f"t{i}"} for i in range(50)])
    assert len([s for s in seen if s.startswith("INSERT")]) == 1


def partner_values(count: int, first: int) -> list[dict]:
    """Partners with a value of every kind of column, varied from one to the next."""
    day, moment = dt.date(2000, 1, 1), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return [
        {
            "name": f"p{n}",
            "email": f"p{n}@example.com",
            "age": n,
            "score": n / 4,
            "active": n % 2 == 0,
            "kind": "company" if n % 3 else "person",
            "birthday": day + dt.timedelta(days=n),
            "last_seen": moment + dt.timedelta(minutes=n),
            "data": [{"n": n}, [n, None]] if n % 2 else ({"k": "é"} if n % 3 else None),
            "token": f"secret-{n}",
        }
        for n in range(first, first + count)
    ]


def stored_values(partner, values: dict) -> dict:
    """The partner's values of the fields in ``values`` (its secret revealed)."""
    found = {name: partner[name] for name in values}
    if "token" in found:
        found["token"] = found["token"].get_secret_value()
    return found


def test_a_bulk_create_keeps_every_value_and_the_order_in_one_insert_of_one_shape(env, registry):
    inserts = []
    for count, first in ((1, 0), (3, 10), (120, 100)):
        with statements(registry) as seen:
            created = env["test.partner"].create(partner_values(count, first))
        inserts.append([s for s in seen if s.startswith("INSERT")])
        env.cache.clear()
        for partner, values in zip(created, partner_values(count, first), strict=True):
            assert stored_values(partner, values) == {
                **values,
                "data": values["data"] if values["data"] is not None else False,
            }
    assert all(len(statements_) == 1 for statements_ in inserts)
    if registry.dialect == "postgresql":  # the rows' values bound as arrays
        assert inserts[1] == inserts[2]


def test_write_each_of_many_records_is_one_update_of_one_shape(env, registry):
    updates = []
    for count, first in ((3, 0), (60, 10)):
        partners = env["test.partner"].create(partner_values(count, first))
        new = [
            {**values, "name": f"renamed {values['name']}", "email": False}
            for values in partner_values(count, first + 1000)
        ]
        for values in new:
            values.pop("token")
        with statements(registry) as seen:
            partners.write_each(new)
        updates.append([s for s in seen if s.startswith("UPDATE")])
        env.cache.clear()
        for partner, values in zip(partners, new, strict=True):
            expected = {**values, "data": values["data"] if values["data"] is not None else False}
            assert stored_values(partner, values) == expected
    assert [len(statements_) for statements_ in updates] == [1, 1]
    if registry.dialect == "postgresql":
        assert updates[0] == updates[1]


def test_reading_a_field_on_many_records_costs_one_query(env, registry):
    env["test.tag"].create([{"name": f"t{i}"} for i in range(200)])
    env.cache.clear()
    tags = env["test.tag"].search([])
    with statements(registry) as seen:
        names = [tag.name for tag in tags]
    assert len(names) == 200
    assert len([s for s in seen if s.startswith("SELECT")]) == 1


def test_write_updates_cache_and_database(env, partners):
    ada = partners[0]
    ada.write({"age": 37, "email": "lovelace@example.com"})
    assert ada.age == 37
    env.cache.clear()
    assert ada.age == 37 and ada.email == "lovelace@example.com"
    assert ada.write_date >= ada.create_date


def test_attribute_assignment_writes(env, partners):
    partners[1].score = 9.5
    env.cache.clear()
    assert partners[1].score == 9.5


def test_search_order_limit_offset_and_count(env, partners):
    model = env["test.partner"]
    assert model.search([]).mapped("name") == ["Acme", "Ada", "Grace"]
    assert model.search([], order="age desc nulls last", limit=2).mapped("name") == [
        "Grace",
        "Ada",
    ]
    assert model.search([], offset=1, limit=1).mapped("name") == ["Ada"]
    assert model.search_count([("kind", "=", "person")]) == 2


def test_read_returns_plain_values(env, partners):
    partners[0].parent_id = partners[2]
    rows = partners[0].read(["name", "parent_id", "tag_ids", "token"])
    assert rows == [
        {
            "id": partners[0].id,
            "name": "Ada",
            "parent_id": partners[2].id,
            "tag_ids": [],
            "token": False,
        }
    ]


def test_unlink_and_missing_records(env, partners):
    grace = partners[1]
    grace.unlink()
    assert not grace.exists()
    assert partners.exists() == partners - grace
    with pytest.raises(MissingError):
        env["test.partner"].browse(grace.id).name


def test_set_operations_equality_and_iteration(env, partners):
    ada, grace, acme = partners
    assert (ada | grace) | ada == ada | grace
    assert len(ada | grace | ada) == 2
    assert (partners & (ada | acme)).ids == [ada.id, acme.id]
    assert (partners - grace).ids == [ada.id, acme.id]
    assert ada in partners and grace not in (ada | acme)
    assert bool(env["test.partner"]) is False and len(partners) == 3
    assert partners[1:].ids == [grace.id, acme.id]
    assert env["test.partner"].browse(ada.id) == ada
    with pytest.raises(ValueError, match="single"):
        partners.ensure_one()
    with pytest.raises(TypeError):
        ada | env["test.tag"]


def test_mapped_filtered_sorted(env, partners):
    ada, grace, acme = partners
    ada.parent_id = acme
    grace.parent_id = acme
    assert partners.mapped("parent_id") == acme
    assert partners.mapped("parent_id.name") == ["Acme"]
    assert partners.mapped(lambda p: p.age * 2) == [72, 170, 0]
    assert partners.filtered(lambda p: p.age > 50) == grace
    assert partners.filtered("parent_id") == ada | grace
    assert partners.sorted("age").ids == [acme.id, ada.id, grace.id]
    assert partners.sorted("age", reverse=True).ids == [grace.id, ada.id, acme.id]
    assert partners.sorted().ids == [acme.id, ada.id, grace.id]


def test_one2many_and_many2many_commands(env, partners):
    ada, _grace, acme = partners
    red, blue = env["test.tag"].create([{"name": "red"}, {"name": "blue"}])
    acme.write({"child_ids": [Command.link(ada.id), Command.create({"name": "Kid"})]})
    assert sorted(acme.child_ids.mapped("name")) == ["Ada", "Kid"]
    assert acme.child_count == 2
    acme.write({"child_ids": [Command.unlink(ada.id)]})
    assert acme.child_ids.mapped("name") == ["Kid"] and ada.parent_id.id is False
    ada.tag_ids = [red.id, blue.id]
    assert ada.tag_ids == red | blue
    ada.write({"tag_ids": [Command.unlink(red.id)]})
    assert ada.tag_ids == blue
    ada.write({"tag_ids": [Command.clear()]})
    assert not ada.tag_ids
    ada.write({"tag_ids": [Command.set([red.id])]})
    assert env["test.partner"].search([("tag_ids", "in", [red.id])]) == ada


def test_stored_compute_follows_dependencies_across_models(env, partners):
    order = env["test.order"].create(
        {"partner_id": partners[0].id, "line_ids": [Command.create({"amount": 2.5})]}
    )
    assert order.total == 2.5 and order.partner_name == "Ada"
    line = env["test.order.line"].create({"order_id": order.id, "amount": 4})
    assert order.total == 6.5
    line.amount = 1
    assert order.total == 3.5
    line.unlink()
    assert order.total == 2.5
    partners[0].name = "Ada L."
    env.cache.clear()
    assert order.partner_name == "Ada L."
    assert env["test.order"].search([("total", ">", 2)]) == order


def test_non_stored_and_related_fields(env, partners):
    ada, _grace, acme = partners
    ada.parent_id = acme
    assert ada.shout == "ADA"
    ada.name = "Augusta"
    assert ada.shout == "AUGUSTA"
    assert ada.parent_name == "Acme"
    assert env["test.partner"].search([("parent_name", "=", "Acme")]) == ada
    with pytest.raises(ValidationError, match="computed"):
        ada.write({"shout": "x"})


def test_read_group_counts_and_aggregates(env, partners):
    groups = env["test.partner"].read_group([], ["kind"], ["__count", "age:avg", "score:max"])
    by_kind = {g["kind"]: g for g in groups}
    assert by_kind["person"]["__count"] == 2
    assert by_kind["person"]["age:avg"] == pytest.approx(60.5)
    assert by_kind["company"]["score:max"] == 4.5
    per_day = env["test.partner"].read_group([], ["create_date:day"], ["__count"])
    assert sum(g["__count"] for g in per_day) == 3
    assert per_day[0]["create_date:day"].hour == 0
    with pytest.raises(ValidationError, match="aggregate"):
        env["test.partner"].read_group([], ["kind"], ["age:median"])


def test_ondelete_cascade_set_null_and_restrict(env, partners):
    ada, grace, acme = partners
    ada.parent_id = acme
    order = env["test.order"].create({"partner_id": grace.id})
    acme.unlink()
    assert ada.parent_id.id is False
    grace.unlink()
    assert not order.exists()
    env["test.contract"].create({"partner_id": ada.id})
    with pytest.raises(Exception, match="still reference"):
        ada.unlink()
    assert ada.exists()


def test_with_context_and_default_from_context(env):
    partner = env["test.partner"].with_context(default_kind="company").create({"name": "X"})
    assert partner.kind == "company"
    assert partner.with_context(lang="fr").env.context == {"default_kind": "company", "lang": "fr"}
    assert partner.with_context({"lang": "de"}).env.context == {"lang": "de"}
    with pytest.raises(TypeError, match="with_context"):
        partner.env.context["lang"] = "en"


def test_fields_of_an_empty_recordset_read_as_empty(env):
    nobody = env["test.partner"]
    assert (nobody.name, nobody.age, nobody.active) == (False, 0, False)
    assert nobody.parent_id == env["test.partner"] and not nobody.tag_ids
    assert nobody.parent_id.name is False


def test_search_read_reads_what_it_finds_in_one_query(env, registry):
    ada = env["test.partner"].create({"name": "Ada", "age": 36})
    env["test.partner"].create([{"name": "Grace", "age": 45, "parent_id": ada.id}, {"name": "Al"}])
    env.cache.clear()
    with statements(registry) as seen:
        rows = env["test.partner"].search_read(
            [("age", ">", 30)], ["name", "age", "parent_id"], order="age desc", limit=5
        )
    assert len([s for s in seen if s.startswith("SELECT")]) == 1
    assert rows == [
        {"id": rows[0]["id"], "name": "Grace", "age": 45, "parent_id": ada.id},
        {"id": ada.id, "name": "Ada", "age": 36, "parent_id": False},
    ]


def test_search_fetch_finds_records_with_their_fields_in_one_query(env, registry):
    ada = env["test.partner"].create({"name": "Ada", "age": 36})
    env["test.partner"].create([{"name": "Grace", "age": 45}, {"name": "Al", "age": 7}])
    env.cache.clear()
    with statements(registry) as seen:
        found = env["test.partner"].search_fetch([("age", ">", 30)], ["name"], order="age")
        names = found.mapped("name")
    assert len(seen) == 1 and names == ["Ada", "Grace"] and found[0] == ada
    with statements(registry) as seen:
        assert found.mapped("age") == [36, 45]  # not fetched: read on demand
    assert len(seen) == 1
    env.cache.clear()
    with statements(registry) as seen:
        everything = env["test.partner"].search_fetch([("name", "=", "Al")], limit=1)
        assert (everything.name, everything.age, everything.active) == ("Al", 7, True)
    assert len(seen) == 1


def test_a_creation_looks_for_no_record_linking_to_the_new_ones(env, registry):
    """Orders follow their partner's name (``partner_id.name``): a new partner has no orders
    yet, so its creation reads none; its parent's child count, found through the new
    record's own link, follows."""
    parent = env["test.partner"].create({"name": "Ada"})
    with statements(registry) as seen:
        child = env["test.partner"].create({"name": "Grace", "parent_id": parent.id})
    assert not [s for s in seen if "FROM test_order" in s]
    assert parent.child_count == 1
    env["test.order"].create({"partner_id": child.id})
    child.write({"name": "Grace H."})
    assert env["test.order"].search([]).mapped("partner_name") == ["Grace H."]
