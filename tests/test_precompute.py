"""Stored computed fields with ``precompute=True`` are written in the statement that writes
their record: the INSERT of a create, the UPDATE of a write (or of a ``write_where``), not an
UPDATE after it; what a precomputed field cannot be computed from beforehand (a relation
written after the UPDATE, another field computed in the same write) is computed after, as
any stored computed field."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core import RegistryError, ValidationError
from core.fields import Field

from .statements import statements


def writes(seen: list[str], table: str = "test_task") -> list[str]:
    return [s for s in seen if s.startswith((f"INSERT INTO {table} ", f"UPDATE {table} "))]


def stored(registry, task_id: int) -> dict:
    with registry.engine.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT remaining, remaining_label, partner_label, tag_count FROM test_task "
                "WHERE id = :i"
            ),
            {"i": task_id},
        ).one()
    return dict(row._mapping)


def test_a_create_inserts_its_precomputed_values(registry):
    with registry.environment() as env:
        partner = env["test.partner"].create({"name": "Ada"})
        with statements(registry) as seen:
            tasks = env["test.task"].create(
                [
                    {"name": "a", "planned": 5, "done": 2, "partner_id": partner.id},
                    {"name": "b", "planned": 1},
                ]
            )
        [insert] = writes(seen)  # the chained label and the tag count too: no UPDATE
        assert insert.startswith("INSERT INTO test_task")
        assert tasks.mapped("remaining") == [3, 1]
        ids = tasks.ids
    assert stored(registry, ids[0]) == {
        "remaining": 3,
        "remaining_label": "3 left",
        "partner_label": "for Ada",
        "tag_count": 0,
    }
    assert stored(registry, ids[1])["partner_label"] is None


def test_a_write_puts_what_follows_it_in_the_same_update(registry):
    with registry.environment() as env:
        task = env["test.task"].create({"name": "a", "planned": 5})
        task_id = task.id
    with registry.environment() as env:
        task = env["test.task"].browse(task_id)
        with statements(registry) as seen:
            task.write({"done": 4})
        # The row is read first (locked, on PostgreSQL: this transaction had not read it),
        # then one UPDATE writes done and remaining; remaining_label follows remaining, in
        # an UPDATE of its own.
        [read] = [s for s in seen if s.startswith("SELECT") and "FROM test_task" in s]
        assert "FOR UPDATE" in read or registry.dialect == "sqlite"
        assert seen.index(read) < seen.index(writes(seen)[0])
        first, second = writes(seen)
        assert "done=" in first and "remaining=" in first and "remaining_label" not in first
        assert "remaining_label=" in second
    assert stored(registry, task_id)["remaining"] == 1
    assert stored(registry, task_id)["remaining_label"] == "1 left"


def test_records_with_different_values_are_written_by_one_statement(registry):
    with registry.environment() as env:
        tasks = env["test.task"].create([{"planned": n} for n in (3, 5, 8)])
        with statements(registry) as seen:
            tasks.write({"done": 2})
        # One UPDATE sets done and each task's own remaining; one its own label.
        assert len(writes(seen)) == 2
        ids = tasks.ids
    assert [stored(registry, i)["remaining"] for i in ids] == [1, 3, 6]
    assert [stored(registry, i)["remaining_label"] for i in ids] == ["1 left", "3 left", "6 left"]


def test_a_recompute_writes_records_with_different_values_in_one_statement(registry):
    with registry.environment() as env:
        partners = env["test.partner"].create([{"name": "Ada"}, {"name": "Bob"}])
        orders = env["test.order"].create([{"partner_id": p.id} for p in partners])
        with statements(registry) as seen:
            env["test.order.line"].create(
                [{"order_id": orders[0].id, "amount": 2.5}, {"order_id": orders[1].id, "amount": 4}]
            )
        assert len(writes(seen, "test_order")) == 1
        assert orders.mapped("total") == [2.5, 4.0]
    with registry.environment() as env:
        assert env["test.order"].browse(orders.ids).mapped("total") == [2.5, 4.0]


def test_a_relation_written_with_them_is_counted_after(registry):
    with registry.environment() as env:
        tags = env["test.tag"].create([{"name": "x"}, {"name": "y"}])
        task = env["test.task"].create({"planned": 1, "tag_ids": [(6, 0, tags.ids)]})
        task_id = task.id
    assert stored(registry, task_id)["tag_count"] == 2
    with registry.environment() as env:
        env["test.task"].browse(task_id).write({"tag_ids": [(3, tags.ids[0])], "planned": 4})
    assert stored(registry, task_id) == {
        "remaining": 4,
        "remaining_label": "4 left",
        "partner_label": None,
        "tag_count": 1,
    }


def test_a_related_value_follows_its_record(registry):
    with registry.environment() as env:
        ada, bob = env["test.partner"].create([{"name": "Ada"}, {"name": "Bob"}])
        task = env["test.task"].create({"partner_id": ada.id})
        task_id = task.id
    with registry.environment() as env:
        env["test.task"].browse(task_id).write({"partner_id": bob.id})
    assert stored(registry, task_id)["partner_label"] == "for Bob"
    with registry.environment() as env:
        env["test.partner"].browse(bob.id).write({"name": "Robert"})
    assert stored(registry, task_id)["partner_label"] == "for Robert"


def test_a_conditional_write_computes_only_what_it_changes(registry):
    with registry.environment() as env:
        tasks = env["test.task"].create([{"planned": 5, "name": "open"}, {"planned": 7}])
        ids = tasks.ids
    with registry.environment() as env:
        tasks = env["test.task"].browse(ids)
        changed = tasks.write_where([("name", "=", "open")], {"done": 5})
        assert changed.ids == [ids[0]]
        assert env["test.task"].browse(ids[1]).remaining == 7  # read again: not written
    assert stored(registry, ids[0])["remaining"] == 0
    assert stored(registry, ids[0])["remaining_label"] == "0 left"
    assert stored(registry, ids[1])["remaining"] == 7
    with registry.environment() as env:
        assert not env["test.task"].browse(ids).write_where([("name", "=", "gone")], {"done": 1})
    assert [stored(registry, i)["remaining"] for i in ids] == [0, 7]


def test_only_a_stored_computed_field_can_be_precomputed():
    field = Field(compute="_compute_x", precompute=True, store=False)
    with pytest.raises(RegistryError, match="precomputed but not a stored computed field"):
        field.setup("x", "test.broken", field.args)


def test_write_each_gives_each_record_its_own_values_in_one_statement(registry):
    with registry.environment() as env:
        tasks = env["test.task"].create([{"planned": 4}, {"planned": 6}, {"planned": 9}])
        ids = tasks.ids
    with registry.environment() as env:
        tasks = env["test.task"].browse(ids)
        with statements(registry) as seen:
            tasks.write_each(
                [{"done": 1, "name": "a"}, {"done": 5, "name": "b"}, {"done": 0, "name": "c"}]
            )
        # The rows read and locked, one UPDATE of done, name and remaining, one of the labels.
        assert len(writes(seen)) == 2
        assert tasks.mapped("remaining") == [3, 1, 9]
    assert [stored(registry, i)["remaining_label"] for i in ids] == ["3 left", "1 left", "9 left"]
    with registry.environment() as env:
        assert env["test.task"].browse(ids).mapped("name") == ["a", "b", "c"]


def test_a_computed_field_written_with_what_it_depends_on_keeps_the_value_given(registry):
    """As in Odoo, the write protects it: it is not recomputed from the fields written with
    it (nor read for), and what depends on it follows the value given, in the same UPDATE."""
    with registry.environment() as env:
        task_id = env["test.task"].create({"name": "a", "planned": 5}).id
    with registry.environment() as env:
        task = env["test.task"].browse(task_id)
        with statements(registry) as seen:
            task.write_each([{"done": 1, "remaining": 10}])
        assert not [s for s in seen if s.startswith("SELECT") and "FROM test_task" in s]
        [write] = writes(seen)
        assert "remaining=" in write and "remaining_label=" in write
    assert stored(registry, task_id)["remaining"] == 10
    assert stored(registry, task_id)["remaining_label"] == "10 left"


def test_write_each_refuses_values_that_do_not_fit_its_records(registry):
    with registry.environment() as env:
        tasks = env["test.task"].create([{"planned": 1}, {"planned": 2}])
        with pytest.raises(ValidationError, match="one dict of values per record"):
            tasks.write_each([{"done": 1}])
        with pytest.raises(ValidationError, match="the same fields on every record"):
            tasks.write_each([{"done": 1}, {"name": "x"}])
        with pytest.raises(ValidationError, match="stored column fields; 'tag_ids'"):
            tasks.write_each([{"tag_ids": []}, {"tag_ids": []}])
        with pytest.raises(ValidationError, match="has no field 'nope'"):
            tasks.write_each([{"nope": 1}, {"nope": 2}])
