"""Field types: conversions, validation, defaults, secrets and datetimes."""

import datetime as dt

import pytest
from pydantic import SecretStr

from core import ValidationError


def test_values_round_trip_through_the_database(env):
    when = dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    partner = env["test.partner"].create(
        {
            "name": "Ada",
            "age": 3,
            "score": 1.5,
            "active": False,
            "birthday": "1815-12-10",
            "last_seen": when,
            "data": {"tags": ["a", 1]},
            "kind": "company",
        }
    )
    env.cache.clear()
    assert (partner.age, partner.score, partner.active) == (3, 1.5, False)
    assert partner.birthday == dt.date(1815, 12, 10)
    assert partner.last_seen == dt.datetime(2026, 5, 1, 10, 30, tzinfo=dt.UTC)
    assert partner.data == {"tags": ["a", 1]}


def test_naive_datetimes_are_taken_as_utc(env):
    partner = env["test.partner"].create({"name": "A", "last_seen": dt.datetime(2026, 1, 1, 8)})
    env.cache.clear()
    assert partner.last_seen == dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("vals", "message"),
    [
        ({"name": "A", "age": "three"}, "'age' of 'test.partner' expects an integer"),
        ({"name": "A", "score": "x"}, "expects a number"),
        ({"name": 42}, "'name' of 'test.partner' expects a string"),
        ({"name": "A", "kind": "robot"}, "allowed values: person, company"),
        ({"name": "A", "birthday": "yesterday"}, "expects a date"),
        ({"name": "A", "last_seen": 5}, "expects a datetime"),
        ({"name": "A", "data": {1, 2}}, "expects JSON data"),
        ({"name": "A", "parent_id": "Acme"}, "expects an id or a 'test.partner' record"),
        ({"age": 3}, "Missing required value for field 'name'"),
        ({"name": "A", "nickname": "x"}, "has no field 'nickname'"),
        ({"name": "A", "age": -1}, "Age cannot be negative"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_written(env, vals, message):
    with pytest.raises(ValidationError, match=message):
        env["test.partner"].create(vals)
    assert env["test.partner"].search_count([]) == 0


def test_write_bad_values_leaves_record_unchanged(env):
    partner = env["test.partner"].create({"name": "A", "age": 5})
    for vals in ({"age": -3}, {"name": False}, {"colour": "red"}, {"age": 1.5}):
        with pytest.raises(ValidationError):
            partner.write(vals)
    env.cache.clear()
    assert (partner.name, partner.age) == ("A", 5)


def test_unique_constraint_message(env):
    env["test.partner"].create({"name": "A", "email": "a@x"})
    with pytest.raises(ValidationError, match="This email is already used"):
        env["test.partner"].create({"name": "B", "email": "a@x"})
    assert env["test.partner"].search_count([]) == 1


def test_secret_is_encrypted_at_rest_and_masked(env):
    partner = env["test.partner"].create({"name": "A", "token": "sk-live-123456"})
    raw = (
        env.cr.execute(partner._table_obj.select().where(partner._table_obj.c.id == partner.id))
        .mappings()
        .one()["token"]
    )
    assert "sk-live-123456" not in raw
    env.cache.clear()
    assert isinstance(partner.token, SecretStr)
    assert partner.token.get_secret_value() == "sk-live-123456"
    assert "sk-live" not in repr(partner.read(["token"]))
    assert "sk-live" not in str(partner.token)


def test_callable_default_receives_the_model(env):
    note_model = env["test.partner"]
    field = note_model._fields["active"]
    assert field.default is True
    assert note_model.default_get(["active", "kind"]) == {"active": True, "kind": "person"}
