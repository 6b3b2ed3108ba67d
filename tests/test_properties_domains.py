"""Property tests of search domains (hypothesis), on SQLite and PostgreSQL.

Any domain given to ``search``/``search_count`` either selects records or raises a
``DomainError`` naming what is wrong; never a raw driver or Python error. Well-formed random
domains select exactly the records that a Python evaluation of the same domain selects, with
the rules the compiler documents (``core/domain.py``): a term on an unset field is false,
``!=``/``not in``/the negative likes also match unset fields, ``'!'`` is the complement.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.domain import TERM_OPERATORS
from core.exceptions import DomainError

PROPERTY = settings(max_examples=300)  # the "llmjobs" profile: conftest.py

# The records the domains run against: unset values, empty strings, a parent chain and tags,
# so that every documented edge (unset fields, negative operators, paths) has a witness.
PARTNERS = [
    {
        "name": "Ab",
        "email": "ab",
        "age": 3,
        "score": 1.5,
        "active": True,
        "kind": "company",
        "birthday": dt.date(2000, 1, 1),
        "parent": None,
        "tags": ["red"],
    },
    {
        "name": "ab",
        "email": None,
        "age": None,
        "score": None,
        "active": False,
        "kind": None,
        "birthday": None,
        "parent": 0,
        "tags": [],
    },
    {
        "name": "B",
        "email": "",
        "age": 0,
        "score": 0.0,
        "active": True,
        "kind": "person",
        "birthday": dt.date(1999, 12, 31),
        "parent": 0,
        "tags": ["red", "blue"],
    },
    {
        "name": "a_%",
        "email": "cab",
        "age": 41,
        "score": -2.0,
        "active": False,
        "kind": "person",
        "birthday": dt.date(2024, 2, 29),
        "parent": 2,
        "tags": ["blue"],
    },
    {
        "name": "Ba",
        "email": "b",
        "age": 7,
        "score": 1e6,
        "active": True,
        "kind": "company",
        "birthday": None,
        "parent": 3,
        "tags": [],
    },
    {
        "name": "",
        "email": "ca",
        "age": 12,
        "score": None,
        "active": True,
        "kind": "person",
        "birthday": dt.date(2000, 1, 2),
        "parent": None,
        "tags": ["green"],
    },
]
TAGS = ["red", "blue", "green"]
ID_VALUES = list(range(1, len(PARTNERS) + 2))  # a fresh database numbers them from 1; one more
LETTERS = "aAbB"


@pytest.fixture
def dataset(registry):
    """The partners above, committed; returns (registry, rows) where each row holds the
    values the oracle reads (ids resolved, unset as None)."""
    with registry.environment() as env:
        tags = {name: env["test.tag"].create({"name": name}).id for name in TAGS}
        ids: list[int] = []
        for spec in PARTNERS:
            parent = None if spec["parent"] is None else ids[spec["parent"]]
            values = {k: v for k, v in spec.items() if k not in ("parent", "tags")}
            values |= {"parent_id": parent or False, "tag_ids": [tags[t] for t in spec["tags"]]}
            values = {k: (False if v is None else v) for k, v in values.items()}
            ids.append(env["test.partner"].create(values).id)
    assert ids == ID_VALUES[:-1], "the id values drawn assume a fresh database"
    rows = []
    for index, spec in enumerate(PARTNERS):
        row = {k: v for k, v in spec.items() if k not in ("parent", "tags")}
        row["id"] = ids[index]
        row["parent_id"] = None if spec["parent"] is None else ids[spec["parent"]]
        row["tag_ids"] = {tags[t] for t in spec["tags"]}
        rows.append(row)
    return registry, rows


# -- the oracle: a domain evaluated in Python ------------------------------------------------
def _like(pattern: str, text: str, fold: bool) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if fold else 0)
    return re.fullmatch(regex, text, flags) is not None


def _date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _term_holds(row: dict, by_id: dict, path: str, operator: str, value: Any) -> bool:
    head, _, rest = path.partition(".")
    if rest:  # a path holds when the linked record exists and the rest holds on it
        linked = row[head]
        return linked is not None and _term_holds(by_id[linked], by_id, rest, operator, value)
    current = row[head]
    if head == "tag_ids":
        if value is False:
            return (not current) if operator == "=" else bool(current)
        wanted = {value} if isinstance(value, int) else set(value)
        hit = bool(current & wanted)
        return hit if operator in ("=", "in") else not hit
    if head == "parent_id" and isinstance(value, str):  # like on the parent's name
        return current is not None and _term_holds(by_id[current], by_id, "name", operator, value)
    if head == "active":  # a boolean: unset counts as False
        current = bool(current)
        if operator in ("in", "not in"):
            found = current in {bool(v) for v in value}  # None: unset, so False
            return found if operator == "in" else not found
        return (current == bool(value)) == (operator == "=")
    if head == "birthday":  # dates compare with ISO strings too
        value = [_date(v) for v in value] if isinstance(value, list) else _date(value)
    if operator in ("in", "not in"):
        values = [v for v in value if v is not False and v is not None]
        with_null = len(values) != len(value)
        found = current in values if current is not None else with_null
        return found if operator == "in" else not found
    if value is False or value is None:
        return (current is None) == (operator == "=")
    if current is None:
        return operator in ("!=", "not like", "not ilike")
    if "like" in operator:
        pattern = value if operator.startswith("=") else f"%{value.replace('%', '')}%"
        if not operator.startswith("="):  # a literal substring
            matched = (
                (value.lower() in current.lower()) if "ilike" in operator else value in current
            )
        else:
            matched = _like(pattern, current, fold="ilike" in operator)
        return not matched if operator.startswith("not") else matched
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return compare[operator](current, value)


def evaluate(tree: Any, row: dict, by_id: dict) -> bool:
    kind = tree[0]
    if kind == "term":
        return _term_holds(row, by_id, *tree[1])
    if kind == "!":
        return not evaluate(tree[1], row, by_id)
    if kind == "and":  # implicit conjunction of a list
        return all(evaluate(part, row, by_id) for part in tree[1])
    first, second = evaluate(tree[1], row, by_id), evaluate(tree[2], row, by_id)
    return (first and second) if kind == "&" else (first or second)


def to_domain(tree: Any, top: bool = True) -> list:
    kind = tree[0]
    if kind == "term":
        return [tree[1]]
    if kind == "!":
        return ["!", *to_domain(tree[1], top=False)]
    if kind == "and":  # implicit at the top level only; explicit inside an operator
        tokens = [token for part in tree[1] for token in to_domain(part, top=False)]
        return tokens if top else ["&"] * (len(tree[1]) - 1) + tokens
    return [kind, *to_domain(tree[1], top=False), *to_domain(tree[2], top=False)]


# -- strategies -------------------------------------------------------------------------------
names = st.text(alphabet=LETTERS + "_%", max_size=3)
emails = st.text(alphabet="abc", max_size=3)
ints = st.integers(-10, 50)
halves = st.integers(-8, 8).map(lambda n: n / 2)
dates = st.dates(dt.date(1999, 12, 30), dt.date(2024, 3, 1))
unset = st.sampled_from([False, None])
COMPARE = ["=", "!=", "<", "<=", ">", ">="]
LIKES = ["like", "not like", "ilike", "not ilike"]


def _scalar_terms(path: str, values, operators: list[str]):
    single = st.tuples(st.just(path), st.sampled_from(operators), values)
    empty = st.tuples(st.just(path), st.sampled_from(["=", "!="]), unset)
    listed = st.tuples(
        st.just(path), st.sampled_from(["in", "not in"]), st.lists(values | unset, max_size=3)
    )
    return single | empty | listed


def _text_terms(path: str, values):
    likes = st.tuples(st.just(path), st.sampled_from(LIKES), st.text(alphabet=LETTERS, max_size=2))
    patterns = st.tuples(
        st.just(path), st.sampled_from(["=like", "=ilike"]), st.text(LETTERS + "%_", max_size=3)
    )
    return _scalar_terms(path, values, ["=", "!="]) | likes | patterns


def valid_terms(id_values):
    """Terms the compiler accepts, over every field type of test.partner."""
    ids = st.sampled_from(id_values)
    return st.one_of(
        _text_terms("name", names),
        _text_terms("parent_id.name", names),
        _scalar_terms("email", emails, COMPARE),  # lowercase only: any collation agrees
        _scalar_terms("kind", st.sampled_from(["person", "company"]), ["=", "!="]),
        _scalar_terms("age", ints | halves, COMPARE),
        _scalar_terms("parent_id.age", ints, COMPARE),
        _scalar_terms("score", halves | ints | st.just(1e6), COMPARE),
        _scalar_terms("birthday", dates | dates.map(dt.date.isoformat), COMPARE),
        _scalar_terms("id", ids, COMPARE),
        _scalar_terms("parent_id", ids, COMPARE),
        st.tuples(st.just("parent_id"), st.sampled_from(LIKES), st.text(LETTERS, max_size=2)),
        st.tuples(
            st.just("active"), st.sampled_from(["=", "!="]), st.sampled_from([True, False, 0, 1])
        ),
        st.tuples(
            st.just("active"),
            st.sampled_from(["in", "not in"]),
            st.lists(st.sampled_from([True, False, None]), max_size=2),
        ),
        st.tuples(
            st.just("tag_ids"),
            st.sampled_from(["=", "!=", "in", "not in"]),
            ids | st.lists(ids, max_size=2),
        ),
        st.tuples(st.just("tag_ids"), st.sampled_from(["=", "!="]), st.just(False)),
    )


def trees(id_values):
    leaves = valid_terms(id_values).map(lambda term: ("term", term))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            inner.map(lambda t: ("!", t)),
            st.tuples(st.sampled_from(["&", "|"]), inner, inner),
            st.lists(inner, min_size=2, max_size=3).map(lambda parts: ("and", parts)),
        ),
        max_leaves=6,
    )


FIELD_NAMES = [
    "name",
    "email",
    "age",
    "score",
    "active",
    "kind",
    "birthday",
    "last_seen",
    "data",
    "token",
    "shout",
    "parent_id",
    "child_ids",
    "tag_ids",
    "parent_name",
    "child_count",
    "id",
    "nope",
    "parent_id.name",
    "parent_id.nope",
    "name.x",
    "tag_ids.name",
    "",
    ".",
    "parent_id.",
]
junk_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from(["a\x00b", "2020-13-01", "2020-01-01", "2020-01-01T10:00:00", "%", "\\"]),
    st.binary(max_size=3),
    st.dates(),
    st.datetimes(),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.lists(st.integers() | st.text(max_size=2) | st.none(), max_size=3),
    st.tuples(st.integers()),
    st.sets(st.integers(-3, 3), max_size=2),
)
junk_terms = st.tuples(
    st.sampled_from(FIELD_NAMES) | st.integers(-1, 2) | st.none(),
    st.sampled_from(sorted(TERM_OPERATORS))
    | st.sampled_from(["<>", "IN", "~", "", "=="])
    | st.none()
    | st.integers(),
    junk_values,
)
junk_tokens = st.one_of(
    junk_terms,
    junk_terms.map(list),
    st.sampled_from(["&", "|", "!", "and", "", "x"]),
    st.tuples(st.text(max_size=2), st.text(max_size=2)),
    st.tuples(st.just("name"), st.just("="), st.just("x"), st.just(1)),
    st.integers(),
    st.none(),
)
junk_domains = st.one_of(
    st.lists(junk_tokens, max_size=5),
    st.lists(junk_tokens, max_size=3).map(tuple),
    st.none(),
    st.text(max_size=5),
    st.integers(),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


def _search(registry, domain) -> tuple[list[int], int]:
    with registry.environment(readonly=True) as env:
        partners = env["test.partner"]
        return sorted(partners.search(domain).ids), partners.search_count(domain)


def _expected(rows: list[dict], tree) -> list[int]:
    by_id = {row["id"]: row for row in rows}
    return sorted(row["id"] for row in rows if evaluate(tree, row, by_id))


@PROPERTY
@given(tree=trees(ID_VALUES))
@example(tree=("term", ("active", "in", [False])))  # matched nothing: False was read as unset
@example(tree=("term", ("active", "not in", [True, None])))
def test_random_domains_select_what_python_selects(dataset, tree):
    registry, rows = dataset
    domain = to_domain(tree)
    found, count = _search(registry, domain)
    assert found == _expected(rows, tree), domain
    assert count == len(found)


def _is_clear(error: DomainError) -> bool:
    message = str(error)
    return bool(message) and ("domain" in message.lower() or "field '" in message.lower())


# Each of these reached the database and came back as a raw driver error (or was misread)
# before core/domain.py checked comparison values against the field's type.
ONCE_RAW = [
    [("name", "=", 5)],  # PostgreSQL: character varying = integer
    [("name", "=", {"a": 1})],  # SQLite and PostgreSQL: cannot bind a dict
    [("name", "in", [[1]])],  # SQLite: cannot bind a list
    [("age", "like", "3")],  # PostgreSQL: integer ~~ text
    [("active", ">", 1)],  # SQLAlchemy ArgumentError on a boolean
    [("id", "=", 2**70)],  # OverflowError (SQLite), integer out of range (PostgreSQL)
    [("age", "<", 2**31)],  # PostgreSQL: integer out of range
    [("score", "=", 10**400)],  # OverflowError / bigint out of range
    [("age", "<", math.nan)],  # NaN: no order, and the backends disagree on it
    [("name", "like", "a\x00b")],  # PostgreSQL: text cannot contain NUL
    [("name", "=", "\ud800")],  # UnicodeEncodeError from the driver
    [("data", "=", "x")],  # PostgreSQL: jsonb = character varying
    [("tag_ids", "in", [2**40])],  # integer out of range
    [("parent_id.", "=", 1)],  # was silently read as parent_id
]


def _with_once_raw(test):
    for domain in ONCE_RAW:
        test = example(domain=domain)(test)
    return test


@PROPERTY
@given(domain=junk_domains)
@_with_once_raw
def test_malformed_domains_fail_with_a_clear_domain_error(dataset, domain):
    registry, _rows = dataset
    try:
        found, count = _search(registry, domain)
    except DomainError as error:
        assert _is_clear(error), str(error)
        return
    assert domain not in ONCE_RAW, f"{domain} was not refused"
    assert count == len(found)
    assert all(isinstance(id_, int) for id_ in found)
