"""Units of work: commit on success, roll back everything on error."""

import pytest

from core import Registry, RegistryError, ValidationError

from .statements import statements


def test_environment_commits_on_success(registry):
    with registry.environment() as env:
        env["test.tag"].create({"name": "kept"})
    with registry.environment() as env:
        assert env["test.tag"].search([]).mapped("name") == ["kept"]


def test_environment_rolls_back_everything_on_error(registry):
    with pytest.raises(ValidationError), registry.environment() as env:
        env["test.tag"].create({"name": "first"})
        env["test.partner"].create({"name": "A", "age": -1})
    with registry.environment() as env:
        assert env["test.tag"].search_count([]) == 0
        assert env["test.partner"].search_count([]) == 0


def test_a_failed_operation_inside_a_unit_leaves_earlier_work(registry):
    """A refused write is undone on its own (savepoint); the unit of work may go on."""
    with registry.environment() as env:
        partner = env["test.partner"].create({"name": "A", "age": 1})
        with pytest.raises(ValidationError):
            partner.write({"age": -5, "name": "B"})
        assert (partner.name, partner.age) == ("A", 1)
    with registry.environment() as env:
        assert env["test.partner"].search([]).mapped("name") == ["A"]


def test_an_atomic_block_takes_one_savepoint_and_fails_whole(registry):
    """Inside ``cr.atomic()`` the ORM's calls take no savepoint of their own; an error undoes
    the whole block, and only the block: what the transaction did before it stays."""
    with registry.environment() as env:
        env["test.tag"].create({"name": "before"})
        with statements(registry) as seen:
            with env.cr.atomic():
                partner = env["test.partner"].create({"name": "A", "age": 1})
                partner.write({"age": 2})
                env["test.tag"].create({"name": "inside"})
            assert sum(s.startswith("SAVEPOINT") for s in seen) == 1
            with pytest.raises(ValidationError), env.cr.atomic():
                env["test.tag"].create({"name": "undone"})
                partner.write({"age": -5})
            assert partner.age == 2
    with registry.environment() as env:
        assert env["test.tag"].search([]).mapped("name") == ["before", "inside"]
        assert env["test.partner"].search([]).mapped("age") == [2]


def test_an_atomic_block_that_begins_its_transaction_takes_no_savepoint(registry):
    with registry.environment() as env, statements(registry) as seen:
        with pytest.raises(ValidationError), env.cr.atomic():
            env["test.tag"].create({"name": "undone"})
            env["test.partner"].create({"name": "A", "age": -1})
        with env.cr.atomic():
            env["test.tag"].create({"name": "kept"})
        assert not [s for s in seen if s.startswith("SAVEPOINT")]
    with registry.environment() as env:
        assert env["test.tag"].search([]).mapped("name") == ["kept"]
        assert not env["test.partner"].search([])


def test_commit_makes_other_transactions_visible(registry):
    """A new transaction sees what others committed. On SQLite a transaction holds the write
    lock until it ends (BEGIN IMMEDIATE), so each side ends its transaction before the
    other one writes: units of work must stay short."""
    with registry.environment() as watcher, registry.environment() as writer:
        tag = writer["test.tag"].create({"name": "one"})
        writer.cr.commit()
        assert watcher["test.tag"].browse(tag.id).name == "one"
        watcher.cr.commit()
        writer["test.tag"].browse(tag.id).name = "two"
        writer.cr.commit()
        assert watcher["test.tag"].browse(tag.id).name == "two"


def test_unknown_model_is_a_clear_error(registry):
    with (
        registry.environment() as env,
        pytest.raises(RegistryError, match="Unknown model 'x.nope'"),
    ):
        env["x.nope"]


def test_in_memory_sqlite_is_refused():
    with pytest.raises(RegistryError, match="SQLite needs a file"):
        Registry("sqlite://", addons_path=[])


def test_unsupported_database_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="Unsupported database 'mysql'"):
        Registry("mysql://u:secretpw@h/db", addons_path=[])


def test_readonly_cursor_does_not_block_writers(registry):
    """A long reader holds no write lock (SQLite: deferred BEGIN under WAL)."""
    with registry.environment(readonly=True) as reader:
        assert reader["test.tag"].search_count([]) == 0  # the read transaction is open
        with registry.environment() as writer:
            writer["test.tag"].create({"name": "written while a reader is open"})
        reader.cr.commit()
        assert reader["test.tag"].search_count([]) == 1


def test_records_cannot_be_read_after_their_unit_of_work(registry):
    with registry.environment() as env:
        tag = env["test.tag"].create({"name": "t"})
    with pytest.raises(RuntimeError, match="unit of work ended"):
        tag.name


def test_a_transactions_memo_goes_with_it_and_with_a_rolled_back_savepoint(registry):
    cr = registry.cursor()
    try:
        cr.memo["found"] = 1
        cr.commit()
        assert cr.memo == {}
        cr.memo["found"] = 2
        with pytest.raises(ValueError), cr.savepoint():
            raise ValueError("undone")
        assert cr.memo == {}  # what was found before may be gone with the savepoint's work
        cr.memo["found"] = 3
        cr.rollback()
        assert cr.memo == {}
    finally:
        cr.close()
