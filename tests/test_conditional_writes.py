"""The primitives protocols are built on: compare-and-set writes (``write_where``), row locks
(``lock_for_update``), cache invalidation, and a database that goes away
(``DatabaseUnavailable``)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import AccessError, DatabaseUnavailable, Registry, ValidationError
from core import database as core_database

from .conftest import TEST_ADDONS


def test_write_where_changes_only_the_records_still_matching(registry):
    with registry.environment() as env:
        partners = env["test.partner"].create([{"name": n, "age": 1} for n in "ABC"])
        partners[1].age = 2
        before = partners[0].write_date
        changed = partners.write_where([("age", "=", 1)], {"age": 10, "score": 0.5})
        assert changed == partners[0] | partners[2]
        assert partners.mapped("age") == [10, 2, 10]
        assert partners.mapped("score") == [0.5, 0.0, 0.5]
        assert partners[0].write_date >= before
        env.invalidate_all()
        assert partners.mapped("age") == [10, 2, 10]  # the database agrees with the cache


def test_write_where_keeps_stored_computed_fields_right(registry):
    with registry.environment() as env:
        partner = env["test.partner"].create({"name": "P"})
        order = env["test.order"].create(
            {"partner_id": partner.id, "line_ids": [(0, 0, {"amount": 2.0})]}
        )
        assert order.total == 2.0
        order.line_ids.write_where([], {"amount": 5.0})
        assert order.total == 5.0
        partner.write_where([("name", "=", "P")], {"name": "Q"})
        assert order.partner_name == "Q"


def test_write_where_checks_constraints_and_fields(registry):
    with registry.environment() as env:
        partner = env["test.partner"].create({"name": "P"})
        with pytest.raises(ValidationError, match="Age cannot be negative"):
            partner.write_where([], {"age": -1})
        with pytest.raises(ValidationError, match="'child_ids' of 'test.partner' is not one"):
            partner.write_where([], {"child_ids": []})
        with pytest.raises(ValidationError, match="is required"):
            partner.write_where([], {"name": False})
        with pytest.raises(ValidationError, match="has no field 'nope'"):
            partner.write_where([], {"nope": 1})


def test_write_where_and_lock_check_access_rights(make_registry):
    registry = make_registry(addons_path=[TEST_ADDONS], addons=["test_security"])
    with registry.environment() as env:
        group = env.ref("base.group_user").id
        owner, other = env["res.users"].create(
            [
                {"name": "O", "login": "o", "groups_id": [group]},
                {"name": "U", "login": "u", "groups_id": [group]},
            ]
        )
        note = env["test.note"].create({"name": "theirs", "user_id": owner.id})
        vault = env["test.vault"].create({"name": "closed"})
        entry = env["test.catalog"].create({"name": "read-only"})
    with registry.environment(user=other.id) as env:
        for record in (env["test.note"].browse(note.id), env["test.vault"].browse(vault.id)):
            with pytest.raises(AccessError):
                record.write_where([], {"name": "forged"})
            with pytest.raises(AccessError):
                record.lock_for_update()
        # Locking what one finds: a note the rules hide is not found; no write right, no lock.
        assert not env["test.note"].search_fetch([("id", "=", note.id)], lock=True)
        with pytest.raises(AccessError):
            env["test.vault"].search_fetch([("id", "=", vault.id)], lock=True)
        catalog = env["test.catalog"]
        assert catalog.search_fetch([("id", "=", entry.id)]) == catalog.browse(entry.id)
        with pytest.raises(AccessError):  # readable, not writable: not theirs to lock
            catalog.search_fetch([("id", "=", entry.id)], lock=True)
    with registry.environment(user=owner.id) as env:
        assert env["test.note"].search_fetch([("id", "=", note.id)], lock=True).id == note.id
        assert env["test.note"].browse(note.id).write_where([], {"name": "mine"})


def _race(registry_a, registry_b, record_id, rounds):
    """Two transactions at once try to move the same record from the same state: count the
    winners of each round."""
    winners = []
    for round_number in range(rounds):
        barrier = threading.Barrier(2)
        won = []

        def contend(registry, name, expected=round_number, barrier=barrier, won=won):
            with registry.environment() as env:
                record = env["test.partner"].browse(record_id)
                barrier.wait()
                if record.write_where([("age", "=", expected)], {"age": expected + 1}):
                    won.append(name)

        threads = [
            threading.Thread(target=contend, args=(registry, name))
            for registry, name in ((registry_a, "a"), (registry_b, "b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners.append(won)
    return winners


def test_write_where_is_a_compare_and_set_across_connections(registry, db_url):
    with registry.environment() as env:
        record_id = env["test.partner"].create({"name": "contested", "age": 0}).id
    other = Registry(db_url, addons_path=[TEST_ADDONS], addons=["test_orm"])
    try:
        winners = _race(registry, other, record_id, rounds=50)
    finally:
        other.close()
    assert all(len(won) == 1 for won in winners), winners
    with registry.environment() as env:
        assert env["test.partner"].browse(record_id).age == 50


def test_lock_for_update_returns_existing_records_and_fresh_values(registry):
    with registry.environment() as env:
        tags = env["test.tag"].create([{"name": "a"}, {"name": "b"}])
        assert tags[0].name == "a"  # cached
        env.cr.execute(
            sa.text("UPDATE test_tag SET name = 'changed' WHERE id = :id"), {"id": tags[0].id}
        )
        assert tags[0].name == "a"  # the cache does not know
        missing = env["test.tag"].browse(tags[1].id + 100)
        locked = (tags | missing).lock_for_update()
        assert locked == tags
        assert tags[0].name == "changed"


def test_search_fetch_with_lock_reads_the_rows_it_locks(registry):
    with registry.environment() as env:
        tags = env["test.tag"].create([{"name": "a"}, {"name": "b"}])
        env.cr.execute(
            sa.text("UPDATE test_tag SET name = 'changed' WHERE id = :id"), {"id": tags[0].id}
        )
        found = env["test.tag"].search_fetch([("name", "!=", "b")], ["name"], lock=True)
        assert found == tags[0]
        assert found.name == "changed"


def test_invalidate_recordset_and_all(registry):
    with registry.environment() as env:
        tag = env["test.tag"].create({"name": "a"})
        env.cr.execute(sa.text("UPDATE test_tag SET name = 'b'"))
        tag.invalidate_recordset(["name"])
        assert tag.name == "b"
        env.cr.execute(sa.text("UPDATE test_tag SET name = 'c'"))
        env.invalidate_all()
        assert tag.name == "c"


def test_lock_for_update_refuses_a_readonly_cursor(registry):
    with registry.environment() as env:
        tag_id = env["test.tag"].create({"name": "a"}).id
    with (
        registry.environment(readonly=True) as env,
        pytest.raises(RuntimeError, match="read-only cursor"),
    ):
        env["test.tag"].browse(tag_id).lock_for_update()
    with (
        registry.environment(readonly=True) as env,
        pytest.raises(RuntimeError, match="read-only cursor"),
    ):
        env["test.tag"].search_fetch([], lock=True)


@pytest.mark.postgres
def test_lock_for_update_blocks_or_skips_other_transactions(make_registry, pg_url):
    registry = make_registry(addons_path=[TEST_ADDONS], addons=["test_orm"], url=pg_url)
    with registry.environment() as env:
        tag_id = env["test.tag"].create({"name": "a"}).id
    holder = registry.cursor()
    from core import Environment

    held = Environment(holder)["test.tag"].browse(tag_id).lock_for_update()
    assert held.ids == [tag_id]
    with registry.environment() as env:
        assert not env["test.tag"].browse(tag_id).lock_for_update(skip_locked=True)
    waited = {"lock_for_update": threading.Event(), "search_fetch": threading.Event()}

    def wait_for_lock(how):
        with registry.environment() as env:
            if how == "lock_for_update":
                env["test.tag"].browse(tag_id).lock_for_update()
            else:
                assert env["test.tag"].search_fetch([("id", "=", tag_id)], lock=True).name == "b"
            waited[how].set()

    waiters = [threading.Thread(target=wait_for_lock, args=(how,)) for how in waited]
    for waiter in waiters:
        waiter.start()
    # blocked while the holder's transaction is open; then they read what it committed
    assert not any(event.wait(0.5) for event in waited.values())
    held.name = "b"
    holder.commit()
    assert all(event.wait(5) for event in waited.values())
    for waiter in waiters:
        waiter.join()
    holder.close()


# -- the database going away -----------------------------------------------------------------
def test_exhausted_pool_is_unavailability_not_an_error(make_registry, db_url):
    registry = Registry(
        db_url,
        addons_path=[TEST_ADDONS],
        addons=["test_orm"],
        engine_options={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2},
    )
    try:
        with registry.environment() as holder:
            holder["test.tag"].search([])  # holds the only connection
            with (
                pytest.raises(DatabaseUnavailable, match="all database connections are busy"),
                registry.environment(readonly=True) as env,
            ):
                env["test.tag"].search([])
        with registry.environment() as env:  # the connection is back: work goes on
            assert env["test.tag"].search_count([]) == 0
    finally:
        registry.close()


def test_sqlite_locked_past_the_busy_timeout_is_unavailability(monkeypatch, tmp_path):
    monkeypatch.setattr(core_database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    registry = Registry(
        f"sqlite:///{tmp_path / 'busy.db'}", addons_path=[TEST_ADDONS], addons=["test_orm"]
    )
    try:
        with registry.environment() as holder:
            holder["test.tag"].create({"name": "holds the write lock"})
            with (
                pytest.raises(DatabaseUnavailable, match="locked by another process") as info,
                registry.environment() as env,
            ):
                env["test.tag"].create({"name": "waits too long"})
            assert "nothing was saved" in str(info.value)
            assert "INSERT" not in str(info.value)  # the SQL stays in the cause, for logs
        with registry.environment() as env:
            assert env["test.tag"].search([]).mapped("name") == ["holds the write lock"]
    finally:
        registry.close()


@pytest.mark.postgres
def test_a_dropped_connection_is_unavailability_and_the_next_unit_reconnects(make_registry, pg_url):
    registry = make_registry(addons_path=[TEST_ADDONS], addons=["test_orm"], url=pg_url)
    with (
        pytest.raises(DatabaseUnavailable, match="lost the database connection"),
        registry.environment() as env,
    ):
        env["test.tag"].create({"name": "lost with its connection"})
        pid = env.cr.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with registry.engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        env["test.tag"].search([])
    with registry.environment() as env:
        assert env["test.tag"].search_count([]) == 0


def backend_pid(registry: Registry) -> int:
    with registry.environment() as env:
        return env.cr.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


@pytest.mark.postgres
def test_a_connection_idle_past_the_ping_delay_is_pinged_and_replaced_when_gone(
    make_registry, pg_url, monkeypatch
):
    monkeypatch.setattr(core_database, "PING_AFTER_IDLE_SECONDS", 0.2)
    registry = make_registry(addons_path=[TEST_ADDONS], addons=["test_orm"], url=pg_url)
    idle = backend_pid(registry)  # back in the pool, idle
    admin = sa.create_engine(core_database.normalize_url(pg_url), poolclass=sa.pool.NullPool)
    with admin.connect() as other:  # a restart, or an idle timeout, closes it meanwhile
        assert other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": idle}).scalar()
    time.sleep(0.3)
    with registry.environment() as env:  # the ping finds it gone: a new one, no error
        env["test.tag"].create({"name": "saved"})
        assert env.cr.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != idle
    with registry.environment() as env:
        assert env["test.tag"].search([]).mapped("name") == ["saved"]


@pytest.mark.postgres
def test_a_connection_in_steady_use_is_not_pinged(make_registry, pg_url, monkeypatch):
    registry = make_registry(addons_path=[TEST_ADDONS], addons=["test_orm"], url=pg_url)
    dialect, pings = registry.engine.dialect, []
    ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda connection: pings.append(1) or ping(connection))
    first = backend_pid(registry)
    assert [backend_pid(registry) for _ in range(20)] == [first] * 20  # one connection, reused
    assert pings == []  # without a round trip before each unit of work
    monkeypatch.setattr(core_database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert backend_pid(registry) == first
    assert pings == [1]  # idle long enough: pinged, and alive


def test_wrong_statements_are_not_unavailability(registry):
    with registry.environment() as env, pytest.raises(sa.exc.DBAPIError) as info:
        env.cr.execute(sa.text("SELECT * FROM no_such_table"))
    assert not isinstance(info.value, DatabaseUnavailable)


OUT_OF_FILES = """
import os, resource, sys
from core import DatabaseUnavailable, Registry

registry = Registry(sys.argv[1], addons_path=[sys.argv[2]], addons=["test_orm"])
registry.engine.dispose()  # the next unit of work opens the database file
soft = len(os.listdir("/proc/self/fd")) + 8
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(open(os.devnull))
except OSError:
    pass
try:
    with registry.environment() as env:
        env["res.users"].search([])
except DatabaseUnavailable as error:
    print("unavailable:", error.reason)
for handle in held:
    handle.close()
with registry.environment() as env:  # files again: the next unit of work goes through
    print("then:", len(env["res.users"].search([])) > 0)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd (Linux)")
def test_sqlite_short_of_open_files_is_unavailability_not_an_error(tmp_path):
    """With every file descriptor taken, SQLite cannot open the database ('unable to open
    database file'): back-pressure to retry, not a wrong path."""
    url = f"sqlite:///{tmp_path / 'files.db'}"
    Registry(url, addons_path=[TEST_ADDONS], addons=["test_orm"]).close()
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_FILES, url, str(TEST_ADDONS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert "unavailable: this process has as many files open as it may" in done.stdout
    assert "then: True" in done.stdout
