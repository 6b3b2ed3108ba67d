"""Addon discovery and dependency order."""

import pytest

from core import RegistryError
from core.addons import addon_search_path, discover, read_manifest, resolve_order

from .addon_factory import write_addon


def order(tmp_path, selected=None):
    """Load order of the addons in ``tmp_path`` (core's base, always first, left out)."""
    manifests = resolve_order(discover(addon_search_path([tmp_path])), selected)
    assert manifests[0].technical_name == "base"
    return [m.technical_name for m in manifests[1:]]


def test_manifest_fields_are_read(tmp_path):
    name = write_addon(
        tmp_path,
        "shop",
        manifest=repr(
            {
                "name": "Shop",
                "version": "2.1",
                "summary": "Sells things",
                "depends": [],
            }
        ),
    )
    manifest = read_manifest(tmp_path / name)
    assert (manifest.name, manifest.version, manifest.summary) == ("Shop", "2.1", "Sells things")
    assert manifest.depends == ("base",) and manifest.installable


def test_dependencies_load_first_and_order_is_stable(tmp_path):
    base = write_addon(tmp_path, "a_base")
    left = write_addon(tmp_path, "left", depends=[base])
    right = write_addon(tmp_path, "right", depends=[base])
    top = write_addon(tmp_path, "top", depends=[right, left])
    found = order(tmp_path, [top])
    assert found == [base, *sorted([left, right]), top]


def test_selecting_addons_loads_only_them_and_their_dependencies(tmp_path):
    one = write_addon(tmp_path, "one")
    write_addon(tmp_path, "other")
    assert order(tmp_path, [one]) == [one]


def test_uninstallable_addons_are_skipped_unless_required(tmp_path):
    off = write_addon(tmp_path, "off", manifest=repr({"name": "off", "installable": False}))
    on = write_addon(tmp_path, "on")
    assert order(tmp_path) == [on]
    needs_off = write_addon(tmp_path, "needs", depends=[off])
    with pytest.raises(RegistryError, match=rf"Addon '{off}' is not installable \(required by"):
        order(tmp_path, [needs_off])


def test_missing_dependency_names_the_chain(tmp_path):
    middle = write_addon(tmp_path, "middle", depends=["ghost"])
    top = write_addon(tmp_path, "top", depends=[middle])
    with pytest.raises(RegistryError) as error:
        order(tmp_path, [top])
    assert f"Addon 'ghost' not found in the addons path (required by {top} -> {middle})" in str(
        error.value
    )


def test_dependency_cycle_names_the_cycle(tmp_path):
    (tmp_path / "cyc_a").mkdir()
    (tmp_path / "cyc_a" / "__manifest__.py").write_text("{'depends': ['cyc_b']}")
    (tmp_path / "cyc_b").mkdir()
    (tmp_path / "cyc_b" / "__manifest__.py").write_text("{'depends': ['cyc_c']}")
    (tmp_path / "cyc_c").mkdir()
    (tmp_path / "cyc_c" / "__manifest__.py").write_text("{'depends': ['cyc_a']}")
    with pytest.raises(RegistryError, match="cycle: cyc_a -> cyc_b -> cyc_c -> cyc_a"):
        order(tmp_path, ["cyc_a"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{'name': 'x',", "is not a valid manifest"),
        ("['not', 'a', 'dict']", "must contain a dict"),
        ("{'depends': 'base'}", "'depends' must be a list"),
        ("{'installable': 'yes'}", "'installable' must be a bool"),
        ("{'name': __import__('os').getcwd()}", "is not a valid manifest"),
    ],
)
def test_broken_manifest_names_the_addon(tmp_path, content, message):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__manifest__.py").write_text(content)
    with pytest.raises(RegistryError, match=f"Addon 'broken'.*{message}"):
        discover([tmp_path])


def test_addons_path_must_be_a_folder(db_url, tmp_path):
    from core import Registry

    with pytest.raises(RegistryError, match="is not a folder"):
        Registry(db_url, addons_path=[tmp_path / "nope"])
