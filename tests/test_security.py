"""Access rights and record rules: own records for users, all for managers, sudo bypasses."""

import pytest

from core import AccessError, ValidationError
from core.security import SecurityPolicy

from .addon_factory import write_addon
from .conftest import TEST_ADDONS


@pytest.fixture
def secured(make_registry):
    registry = make_registry(addons_path=[TEST_ADDONS], addons=["test_security"])
    with registry.environment() as env:
        users = env["res.users"]
        alice = users.create(
            {"name": "Alice", "login": "alice", "groups_id": [env.ref("base.group_user").id]}
        )
        bob = users.create(
            {"name": "Bob", "login": "bob", "groups_id": [env.ref("base.group_user").id]}
        )
        boss = users.create(
            {
                "name": "Boss",
                "login": "boss",
                "groups_id": [env.ref("test_security.group_note_manager").id],
            }
        )
        notes = env["test.note"].create(
            [
                {"name": "alice's", "user_id": alice.id},
                {"name": "bob's", "user_id": bob.id},
            ]
        )
        env["test.vault"].create({"name": "gold"})
        ids = {
            "alice": alice.id,
            "bob": bob.id,
            "boss": boss.id,
            "alice_note": notes[0].id,
            "bob_note": notes[1].id,
        }
    return registry, ids


def test_users_see_only_their_own_records_and_managers_see_all(secured):
    registry, ids = secured
    with registry.environment(user=ids["alice"]) as env:
        assert env["test.note"].search([]).mapped("name") == ["alice's"]
        assert env["test.note"].search_count([]) == 1
    with registry.environment(user=ids["boss"]) as env:
        assert sorted(env["test.note"].search([]).mapped("name")) == ["alice's", "bob's"]


def test_search_fetch_and_search_read_keep_to_the_record_rules(secured):
    registry, ids = secured
    with registry.environment(user=ids["alice"]) as env:
        assert env["test.note"].search_fetch([], ["name"]).mapped("name") == ["alice's"]
        assert [row["name"] for row in env["test.note"].search_read([], ["name"])] == ["alice's"]
        with pytest.raises(AccessError):  # what the search did not find is still denied
            env["test.note"].browse(ids["bob_note"]).name


def test_reading_another_users_record_by_id_is_denied(secured):
    registry, ids = secured
    with registry.environment(user=ids["alice"]) as env:
        other = env["test.note"].browse(ids["bob_note"])
        with pytest.raises(AccessError) as error:
            other.name
        assert "bob's" not in str(error.value)
        assert "'test.note'" in str(error.value) and "read" in str(error.value)


def test_denied_write_changes_nothing(secured):
    registry, ids = secured
    with registry.environment(user=ids["alice"]) as env:
        both = env["test.note"].sudo().search([]).with_user(ids["alice"])
        with pytest.raises(AccessError, match="not allowed to modify some 'test.note'"):
            both.write({"name": "mine now"})
        with pytest.raises(AccessError):
            env["test.note"].browse(ids["bob_note"]).write({"name": "hacked"})
    with registry.environment() as env:
        assert sorted(env["test.note"].search([]).mapped("name")) == ["alice's", "bob's"]


def test_creating_outside_ones_rules_is_denied_and_rolled_back(secured):
    registry, ids = secured
    with registry.environment(user=ids["alice"]) as env:
        with pytest.raises(AccessError, match="create"):
            env["test.note"].create({"name": "for bob", "user_id": ids["bob"]})
        mine = env["test.note"].create({"name": "for me"})
        assert mine.user_id.id == ids["alice"]
    with registry.environment() as env:
        assert env["test.note"].search_count([("name", "=", "for bob")]) == 0


def test_unlink_needs_the_right_and_the_rule(secured):
    registry, ids = secured
    with (
        registry.environment(user=ids["alice"]) as env,
        pytest.raises(AccessError, match="not allowed to delete 'test.note'"),
    ):
        env["test.note"].browse(ids["alice_note"]).unlink()
    with registry.environment(user=ids["boss"]) as env:
        env["test.note"].browse(ids["bob_note"]).unlink()
    with registry.environment() as env:
        assert env["test.note"].search([]).mapped("name") == ["alice's"]


def test_model_without_access_line_is_closed_but_sudo_bypasses(secured):
    registry, ids = secured
    with registry.environment(user=ids["boss"]) as env:
        with pytest.raises(AccessError, match="not allowed to read 'test.vault'"):
            env["test.vault"].search([])
        assert env["test.vault"].sudo().search([]).mapped("name") == ["gold"]
        assert env["test.note"].sudo().search_count([]) == 2
        assert env["test.note"].sudo().with_user(ids["alice"]).search_count([]) == 1


def test_implied_groups_and_has_group(secured):
    registry, ids = secured
    with registry.environment() as env:
        boss = env["res.users"].browse(ids["boss"])
        assert boss.has_group("base.group_user")
        assert boss.has_group("test_security.group_note_manager")
        assert (
            not env["res.users"].browse(ids["alice"]).has_group("test_security.group_note_manager")
        )


def test_passwords_are_hashed_and_checked(secured):
    registry, ids = secured
    with registry.environment() as env:
        alice = env["res.users"].browse(ids["alice"])
        alice.set_password("correct horse")
        assert "correct horse" not in alice.password_hash
        assert env["res.users"].authenticate("alice", "correct horse") == ids["alice"]
        with pytest.raises(AccessError, match="Wrong login or password"):
            env["res.users"].authenticate("alice", "wrong")


def test_a_blank_login_is_refused_and_nothing_is_written(secured):
    registry, ids = secured
    with registry.environment() as env:
        users = env["res.users"]
        refused = "A user needs a login, the name they sign in with; it cannot be blank"
        for blank in ("", "   "):
            with pytest.raises(ValidationError, match=refused):
                users.create({"name": "Carol", "login": blank})
        with pytest.raises(ValidationError, match="needs a login"):
            users.browse(ids["alice"]).write({"login": " "})
        assert users.search_count([("name", "=", "Carol")]) == 0
        assert users.browse(ids["alice"]).login == "alice"


ACCESS_HEADER = "id,name,model_id:id,group_id:id,perm_read,perm_write,perm_create,perm_unlink\n"


def rule(model: str, domain: str) -> str:
    return f'- id: r\n  model: {model}\n  domain: "{domain}"\n'


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"security/rules.yaml": rule("tmp.x", "[('a', '=', 1)]")}, "unknown model 'tmp.x'"),
        ({"security/rules.yaml": rule("res.users", "[('a', '=', os.x)]")}, "names 'os'"),
        ({"security/rules.yaml": rule("res.users", "__import__('os')")}, "may only use literals"),
        (
            {"security/ir.model.access.csv": ACCESS_HEADER + "a,a,model_nope,,1,0,0,0\n"},
            "line 2: unknown model reference 'model_nope'",
        ),
        ({"security/groups.yaml": "- name: no id\n"}, "entry 1: missing id"),
    ],
)
def test_bad_security_files_are_clear_errors(tmp_path, files, message):
    from core.addons import read_manifest
    from core.exceptions import RegistryError

    name = write_addon(tmp_path, "badsec", files=files)
    with pytest.raises(RegistryError, match=message):
        SecurityPolicy().load_addon(read_manifest(tmp_path / name), ["res.users"])
