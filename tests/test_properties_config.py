"""Property tests of configuration files (hypothesis): ``cron.yaml`` and ``__manifest__.py``.

Whatever a cron file holds, loading it (``core.cron.config``) and applying it to the
``ir.cron`` rows either works, the rows then matching its entries, or fails with a
``RegistryError`` naming the file, and leaves every row as it was. Whatever a manifest holds,
reading it (``core.addons``) gives a well-typed ``Manifest`` or a ``RegistryError`` naming the
addon, and a registry that cannot load its addons creates no table.
"""

from __future__ import annotations

import math
import uuid

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core import Registry
from core.addons import Manifest, addon_search_path, discover, read_manifest, resolve_order
from core.cron import load_cron_file, sync_rows
from core.database import normalize_url
from core.exceptions import RegistryError

PROPERTY = settings(max_examples=100)  # the "llmjobs" profile: conftest.py
ROW_FIELDS = ("name", "model_name", "method", "interval_number", "interval_type", "args", "active")

# -- cron files -------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["a\x00b", "\x07", "line\nbreak", "é", ""]),
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)
intervals = st.one_of(
    st.builds(
        "{} {}".format,
        st.integers(min_value=-2, max_value=10**12) | st.sampled_from([365 * 86400, 366]),
        st.sampled_from(["second", "seconds", "minutes", "hour", "days", "day", "weeks", ""]),
    ),
    junk,
)
good_entries = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c", "d"]),
        "model": st.just("test.cron.tick"),
        "method": st.sampled_from(["record_tick", "fail"]),
        "interval": st.builds(
            "{} {}".format,
            st.integers(1, 1000),
            st.sampled_from(["second", "seconds", "minutes", "hour", "days"]),
        ),
    },
    optional={
        "args": st.dictionaries(st.just("label"), st.text(max_size=4), max_size=1),
        "user": st.sampled_from(["op", "__system__"]),
        "active": st.booleans(),
    },
)
bad_values = {
    "name": st.text(max_size=3) | junk,
    "model": st.sampled_from(["test.cron.tik", "llm.thread", ""]) | junk,
    "method": st.sampled_from(["nope", "label", "record_tik"]) | junk,
    "interval": intervals,
    "args": st.dictionaries(st.sampled_from(["label", "seconds"]), scalars, max_size=2) | junk,
    "user": st.sampled_from(["ghost", "gone", ""]) | junk,
    "active": junk,
    "colour": junk,
}


@st.composite
def entries(draw) -> dict:
    """A valid entry, or one with a key given a wrong value, added or left out."""
    entry = draw(good_entries)
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(bad_values)))
        if draw(st.integers(0, 4)) == 0:
            entry.pop(key, None)
        else:
            entry[key] = draw(bad_values[key])
    return entry


entry_lists = st.lists(entries() | entries() | junk, max_size=3)


def _dump(data) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True).encode()


cron_texts = st.one_of(
    entry_lists.map(_dump),
    junk.map(_dump),
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    # a valid-looking file cut short, or with a byte changed
    st.tuples(entry_lists.map(_dump), st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
    st.tuples(entry_lists.map(_dump), st.integers(0, 200), st.binary(min_size=1, max_size=2)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
    ),
)


@pytest.fixture
def cron_rows(cron_registry):
    with cron_registry.environment() as env:
        env["res.users"].create({"name": "Op", "login": "op"})
        env["res.users"].create({"name": "Gone", "login": "gone", "active": False})
    return cron_registry


def _rows(registry) -> dict[str, dict]:
    with registry.environment(readonly=True) as env:
        crons = env["ir.cron"].search([])
        return {row["name"]: row for row in crons.read([*ROW_FIELDS, "user_id"])}


def _check_rows_follow(rows: dict[str, dict], config) -> None:
    for entry in config.entries:
        row = rows[entry.name]
        assert (row["model_name"], row["method"]) == (entry.model, entry.method)
        assert (row["interval_number"], row["interval_type"]) == (
            entry.interval_number,
            entry.interval_type,
        )
        assert row["active"] == entry.active and (row["args"] or {}) == entry.args
    for name, row in rows.items():
        if name not in config.declared:
            assert not row["active"], f"{name} is no longer declared but still active"


def _entry(**values) -> dict:
    """A valid entry, with ``values`` changed."""
    return {"name": "a", "model": "test.cron.tick", "method": "fail", "interval": "1 day"} | values


@PROPERTY
@given(text=cron_texts)
# Each was a raw exception from the loader or from writing the rows, before the loader checked
# it (core/cron/config.py).
@example(text=b"\xff\xfe- {}")  # UnicodeDecodeError
@example(text=b"\x00")  # yaml ReaderError, raised outside the YAML error handling
@example(text=_dump([_entry(interval="99999999999999999999 days")]))  # OverflowError
@example(text=_dump([_entry(interval="3000000000 seconds")]))  # PG: integer out of range
@example(text=_dump([_entry(name="a\x00b")]))  # PG: text cannot contain NUL
@example(text=_dump([_entry(args={"x": math.nan})]))  # ValidationError naming no file
@example(text=_dump([_entry(args={"x": "\x00"})]))  # PG: jsonb refuses \u0000
@example(text=_dump([_entry(user="a\x00")]))  # DomainError naming no file
# A first entry written, the second failing: the first must be rolled back with it.
@example(text=_dump([_entry(name="new"), _entry(name="b", user="ghost")]))
def test_cron_files_load_whole_or_fail_naming_the_file(cron_rows, tmp_path, text):
    path = tmp_path / "cron.yaml"
    path.write_bytes(text)
    before = _rows(cron_rows)
    try:
        config = load_cron_file(cron_rows, path)
        sync_rows(cron_rows, config)
    except RegistryError as error:
        assert str(path) in str(error), str(error)
        assert _rows(cron_rows) == before, "a failed cron file changed the rows"
        return
    assert len(config.entries) == len(config.declared)
    for entry in config.entries:
        assert 0 < entry.interval_seconds <= 365 * 86400
        assert all(text.isprintable() for text in (entry.name, entry.model, entry.method))
        assert isinstance(entry.args, dict) and isinstance(entry.active, bool)
    _check_rows_follow(_rows(cron_rows), config)


# -- manifests --------------------------------------------------------------------------------
literals = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=2).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=2)
    ),
    max_leaves=5,
)
manifest_values = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=5) | literals,
        "version": st.sampled_from(["1.0", "0.1"]) | literals,
        "depends": st.lists(st.sampled_from(["base", "ghost", "", "self"]), max_size=2) | literals,
        "summary": st.text(max_size=5) | literals,
        "installable": st.booleans() | literals,
        "data": st.lists(st.text(max_size=3), max_size=1) | literals,
        "extra": literals,
    },
)
manifest_texts = st.one_of(
    manifest_values.map(repr),
    literals.map(repr),
    st.text(max_size=30),
    st.tuples(manifest_values.map(repr), st.integers(0, 60)).map(lambda t: t[0][: t[1]]),
    st.sampled_from(
        [
            "{[1]: 2}",
            "{'x': {[]}}",
            "\ufeff{'name': 'bom'}",
            "{'a': 1e999}",
            "{**{}}",
            "{'name': 'x' * 3}",
            "(" * 300 + ")" * 300,
        ]
    ),
).map(str.encode) | st.binary(max_size=20)


def _write_addon(folder, text: bytes, depends_on_self: bool = False) -> str:
    name = f"prop_{uuid.uuid4().hex[:10]}"
    addon = folder / name
    addon.mkdir(parents=True)
    (addon / "__manifest__.py").write_bytes(text.replace(b"'self'", repr(name).encode()))
    (addon / "__init__.py").write_text("")
    return name


@PROPERTY
@given(text=manifest_texts)
@example(text=b"{[1]: 2}")  # TypeError from ast.literal_eval (an unhashable key)
@example(text=b"{'x': {[]}}")  # TypeError (an unhashable set element)
@example(text="\ufeff{'name': 'bom'}".encode())  # a byte order mark: now read as UTF-8-sig
def test_manifests_are_read_or_refused_naming_the_addon(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("addons")
    name = _write_addon(folder, text)
    try:
        manifest = read_manifest(folder / name)
        order = resolve_order(discover(addon_search_path([folder])), [name])
    except RegistryError as error:
        assert name in str(error) or "'ghost'" in str(error) or "''" in str(error), str(error)
        return
    assert isinstance(manifest, Manifest)
    assert all(isinstance(dep, str) for dep in manifest.depends) and "base" in manifest.depends
    assert isinstance(manifest.name, str) and isinstance(manifest.version, str)
    assert isinstance(manifest.installable, bool) and manifest.installable
    assert [m.technical_name for m in order][-1] == name


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(normalize_url(url))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@settings(PROPERTY, max_examples=8)
@given(text=manifest_texts)
@example(text=b"{'depends': ['ghost']}")
def test_a_registry_that_cannot_load_its_addons_creates_no_table(db_url, tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("addons")
    name = _write_addon(folder, text)
    before = _tables(db_url)
    try:
        registry = Registry(db_url, addons_path=[folder], addons=[name])
    except RegistryError as error:
        assert name in str(error) or "ghost" in str(error) or "''" in str(error)
        assert _tables(db_url) == before
        return
    registry.close()
    assert "res_users" in _tables(db_url)
