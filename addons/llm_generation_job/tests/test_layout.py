"""The layout the job store's guarantees rest on: one module owns the jobs' SQL and lease
fields, and addons reach the database through core's public API only."""

from pathlib import Path

ADDONS = Path(__file__).resolve().parents[2]
ADDON = ADDONS / "llm_generation_job"
STORE = ADDON / "store.py"
# Core's internals: the table objects, the transaction cache, the triggers of computed fields.
ORM_INTERNALS = ("_table_obj", "env.cache", ".cache.", "triggers.")


def sources(folder: Path, tests: bool):
    for path in sorted(folder.rglob("*.py")):
        if tests or "tests" not in path.relative_to(folder).parts:
            yield path, path.read_text(encoding="utf-8")


def test_no_addon_reaches_into_orm_internals():
    found = [
        f"{path.relative_to(ADDONS)}: {name}"
        for path, text in sources(ADDONS, tests=True)
        for name in ORM_INTERNALS
        if name in text and path != Path(__file__).resolve()
    ]
    assert not found


def test_addon_code_issues_no_sql_of_its_own():
    found = [
        str(path.relative_to(ADDONS))
        for path, text in sources(ADDONS, tests=False)
        if "sqlalchemy" in text or "cr.execute" in text
    ]
    assert not found


def test_only_the_job_store_names_the_lease_or_writes_conditionally():
    model = ADDON / "models" / "llm_generation_job.py"
    found = []
    for path, text in sources(ADDON, tests=False):
        for line in text.splitlines():
            declaration = path == model and " = fields." in line
            named = any(name in line for name in ("lease_token", "lease_expires_at"))
            if path != STORE and (("write_where(" in line) or (named and not declaration)):
                found.append(f"{path.relative_to(ADDON)}: {line.strip()}")
    assert not found
