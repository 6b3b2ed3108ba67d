"""Domains: prefix operators, term operators, empty values, dotted paths and bad input."""

import pytest

from core import DomainError


@pytest.fixture
def data(env):
    acme = env["test.partner"].create({"name": "Acme", "kind": "company"})
    red = env["test.tag"].create({"name": "red"})
    people = env["test.partner"].create(
        [
            {
                "name": "Ada",
                "age": 36,
                "parent_id": acme.id,
                "email": "ada@x.io",
                "tag_ids": [red.id],
            },
            {"name": "Grace", "age": 85, "active": False},
            {"name": "alan", "age": 41, "parent_id": acme.id, "score": 2.0},
        ]
    )
    return {"acme": acme, "red": red, "ada": people[0], "grace": people[1], "alan": people[2]}


def names(env, domain):
    return sorted(env["test.partner"].search(domain).mapped("name"))


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ([], ["Acme", "Ada", "Grace", "alan"]),
        ([("age", ">", 40)], ["Grace", "alan"]),
        ([("age", ">=", 41), ("age", "<=", 41)], ["alan"]),
        (["|", ("name", "=", "Ada"), ("name", "=", "Grace")], ["Ada", "Grace"]),
        (["!", ("kind", "=", "company")], ["Ada", "Grace", "alan"]),
        (["&", "|", ("age", "<", 40), ("age", ">", 80), ("active", "=", True)], ["Ada"]),
        ([("name", "in", ["Ada", "alan"])], ["Ada", "alan"]),
        ([("name", "not in", ["Ada", "alan"])], ["Acme", "Grace"]),
        ([("name", "like", "A")], ["Acme", "Ada"]),
        ([("name", "ilike", "a")], ["Acme", "Ada", "Grace", "alan"]),
        ([("name", "not ilike", "CM")], ["Ada", "Grace", "alan"]),
        ([("name", "=like", "A_a")], ["Ada"]),
        ([("name", "=ilike", "AL%")], ["alan"]),
        ([("email", "=", False)], ["Acme", "Grace", "alan"]),
        ([("email", "!=", False)], ["Ada"]),
        ([("email", "!=", "ada@x.io")], ["Acme", "Grace", "alan"]),
        ([("score", "=", None)], ["Acme", "Ada", "Grace"]),
        ([("active", "=", False)], ["Grace"]),
        ([("active", "!=", False)], ["Acme", "Ada", "alan"]),
        ([("parent_id.name", "=", "Acme")], ["Ada", "alan"]),
        ([("parent_id.kind", "=", "company"), ("age", "<", 40)], ["Ada"]),
        ([("parent_id", "=", False)], ["Acme", "Grace"]),
        ([("parent_id", "ilike", "acm")], ["Ada", "alan"]),
        ([("child_ids.name", "=", "Ada")], ["Acme"]),
        ([("child_ids", "!=", False)], ["Acme"]),
        ([("tag_ids.name", "=", "red")], ["Ada"]),
        ([("tag_ids", "=", False)], ["Acme", "Grace", "alan"]),
        ([(1, "=", 1)], ["Acme", "Ada", "Grace", "alan"]),
        ([(0, "=", 1)], []),
        ([("name", "in", [])], []),
    ],
)
def test_domain_selects_expected_records(env, data, domain, expected):
    assert names(env, domain) == expected


def test_like_treats_wildcards_in_the_value_literally(env, data):
    env["test.partner"].create({"name": "100% pure"})
    assert names(env, [("name", "like", "0%")]) == ["100% pure"]
    assert names(env, [("name", "like", "_")]) == []


def test_values_are_bound_parameters_not_sql(env, data):
    assert names(env, [("name", "=", "x' OR '1'='1")]) == []


def test_dates_compare_with_strings_and_datetimes(env, data):
    first = env["test.partner"].search([], order="id", limit=1)
    created = first.create_date
    assert env["test.partner"].search_count([("create_date", ">=", created)]) == 4
    assert env["test.partner"].search_count([("create_date", "<", "2000-01-01T00:00:00")]) == 0


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ([("colour", "=", "red")], "Unknown field 'colour' on model 'test.partner'"),
        ([("parent_id.colour", "=", 1)], "Unknown field 'colour' on model 'test.partner'"),
        ([("name", "~", "x")], "Unknown operator '~'"),
        ([("name", "=")], "Invalid domain element"),
        (["|", ("name", "=", "x")], "missing 1 operand"),
        ("name = x", "must be a list"),
        ([("name", "in", "Ada")], "'in' takes a list"),
        ([("name", ">", False)], "cannot use '>' with an empty value"),
        ([("age", "=", "old")], "expected a number"),
        ([("shout", "=", "ADA")], "computed and not stored"),
        ([("name.x", "=", 1)], "not relational"),
        ([("token", "=", "x")], "is a secret"),
        ([("create_date", ">", "yesterday")], "not a valid datetime"),
    ],
)
def test_bad_domains_name_the_offending_term(env, data, domain, message):
    with pytest.raises(DomainError, match=message):
        env["test.partner"].search(domain)
