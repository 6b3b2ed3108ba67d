"""cron.yaml: every malformed input, an unknown model or method included, is a clear error
naming the entry and its line; the rows follow the file."""

import datetime as dt

import pytest

from core import Registry, RegistryError
from core.cron import load_cron_file, sync_rows
from core.cron.config import DEFAULT_FILE

GOOD = """\
# comments are fine
- name: ticker
  model: test.cron.tick
  method: record_tick
  interval: 1 second
- name: failing
  model: test.cron.tick
  method: fail
  interval: 2 minutes
  active: false
"""


@pytest.fixture
def write(tmp_path):
    def write(text: str):
        path = tmp_path / "cron.yaml"
        path.write_text(text)
        return path

    return write


def entry(**values) -> str:
    """A one-line entry (defaults: a valid one) preceded by a comment line."""
    fields = {"name": "a", "model": "test.cron.tick", "method": "fail", "interval": "1 day"}
    fields.update(values)
    body = ", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None)
    return "# a comment\n- {" + body + "}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", r"cron\.yaml must be a list of scheduled actions \(got a dict\)"),
        ("- [1, 2]\n", r"cron\.yaml line 1: a scheduled action must be a mapping"),
        (entry(colour="red"), r"Cron 'a' \(.*cron\.yaml line 2\): unknown key\(s\) colour"),
        (entry(name=None), r"cron\.yaml line 2: missing name"),
        (entry(method=None), r"Cron 'a' \(.*line 2\): missing method"),
        (entry(model=None, interval=None), r"Cron 'a' \(.*line 2\): missing model, interval"),
        (entry(name=3), r"line 2: name must be a string, not 3"),
        (entry(interval="0 seconds"), r"Cron 'a' .*interval '0 seconds' must be 'N seconds'"),
        (entry(interval="-5 minutes"), r"interval '-5 minutes' must be"),
        (entry(interval="2 weeks"), r"interval '2 weeks' must be"),
        (entry(interval="30"), r"interval 30 must be"),
        (entry(method="nope"), r"Cron 'a' \(.*line 2\): model 'test.cron.tick' has no method"),
        (entry(method="record_tik"), r"no method 'record_tik' \(did you mean 'record_tick'\?\)"),
        (
            entry(model="test.cron.tik"),
            r"Cron 'a' \(.*line 2\): no loaded addon defines the model 'test.cron.tik' "
            r"\(did you mean 'test.cron.tick'\?\)",
        ),
        (entry(model="llm.thread"), r"no loaded addon defines the model 'llm.thread'\. Fix"),
        (entry(method="label"), r"has no method 'label'"),  # a field is not a method
        (entry(args="[1]"), r"Cron 'a' .*args must be a mapping"),
        (entry(active="maybe"), r"Cron 'a' .*active must be true or false"),
        (entry() + entry(), r"Cron 'a' \(.*line 4\) is declared twice \(first at .*line 2\)"),
        ("- {name: a", r"cron\.yaml is not valid YAML"),
    ],
)
def test_bad_cron_files_are_clear_errors(cron_registry, write, text, message):
    with pytest.raises(RegistryError, match=message):
        load_cron_file(cron_registry, write(text))


def test_duplicates_are_errors_even_when_the_model_is_not_loaded(cron_registry, write):
    text = entry(model="llm.thread") + entry(model="llm.thread")
    with pytest.raises(RegistryError, match="declared twice"):
        load_cron_file(cron_registry, write(text))


def test_a_missing_file_is_an_error_only_when_named(cron_registry, tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        load_cron_file(cron_registry, tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "[]\n"])
def test_empty_files_declare_nothing(cron_registry, write, text):
    assert load_cron_file(cron_registry, write(text)).entries == ()


def test_good_file(cron_registry, write):
    config = load_cron_file(cron_registry, write(GOOD))
    ticker, failing = config.entries
    assert (ticker.name, ticker.interval_number, ticker.interval_type) == ("ticker", 1, "seconds")
    assert ticker.where.endswith("cron.yaml line 2") and ticker.active and ticker.args == {}
    assert failing.interval_seconds == 120 and not failing.active


def test_the_project_cron_file_is_valid(tmp_path):
    """The shipped cron.yaml against the project's addons (methods exist)."""
    registry = Registry(f"sqlite:///{tmp_path / 'unused.db'}", sync_schema=False)
    try:
        config = load_cron_file(registry, DEFAULT_FILE)
    finally:
        registry.close()
    assert config.entries


def test_rows_follow_the_file(cron_registry, write):
    ids = sync_rows(cron_registry, load_cron_file(cron_registry, write(GOOD)))
    assert set(ids) == {"ticker", "failing"}
    with cron_registry.environment() as env:
        ticker = env["ir.cron"].browse(ids["ticker"])
        assert (ticker.model_name, ticker.method, ticker.user_id.id) == (
            "test.cron.tick",
            "record_tick",
            1,
        )
        assert (ticker.interval_number, ticker.interval_type) == (1, "seconds") and ticker.active
        assert not env["ir.cron"].browse(ids["failing"]).active
        # a row of another worker's addon, as that worker would have synced it
        env["ir.cron"].create(
            {"name": "elsewhere", "model_name": "llm.thread", "method": "x", "interval_number": 1}
        )
        env["ir.cron"].browse(ids["ticker"]).nextcall = dt.datetime.now(dt.UTC) + dt.timedelta(
            days=1
        )
    changed = GOOD.replace("interval: 2 minutes\n  active: false", "interval: 3 seconds")
    changed = changed.replace("- name: ticker", "- name: renamed")
    again = sync_rows(cron_registry, load_cron_file(cron_registry, write(changed)))
    assert again["failing"] == ids["failing"]  # updated by name
    with cron_registry.environment() as env:
        failing = env["ir.cron"].browse(ids["failing"])
        assert failing.active and (failing.interval_number, failing.interval_type) == (3, "seconds")
        assert not env["ir.cron"].browse(ids["ticker"]).active  # no longer declared
        assert env["ir.cron"].search([("name", "=", "elsewhere")]).active  # not our model


def test_a_shorter_interval_takes_effect_at_once(cron_registry, write):
    ids = sync_rows(cron_registry, load_cron_file(cron_registry, write(entry(interval="1 day"))))
    sync_rows(cron_registry, load_cron_file(cron_registry, write(entry(interval="5 seconds"))))
    with cron_registry.environment() as env:
        nextcall = env["ir.cron"].browse(ids["a"]).nextcall
    assert nextcall <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)


def test_run_as_user(cron_registry, write):
    with cron_registry.environment() as env:
        uid = env["res.users"].create({"name": "Op", "login": "op"}).id
    ids = sync_rows(cron_registry, load_cron_file(cron_registry, write(entry(user="op"))))
    with cron_registry.environment() as env:
        assert env["ir.cron"].browse(ids["a"]).user_id.id == uid


@pytest.mark.parametrize("login", ["ghost", "gone"])
def test_unknown_or_inactive_user_is_an_error(cron_registry, write, login):
    with cron_registry.environment() as env:
        env["res.users"].create({"name": "Gone", "login": "gone", "active": False})
    config = load_cron_file(cron_registry, write(entry(user=login)))
    with pytest.raises(RegistryError, match=rf"Cron 'a' \(.*line 2\): no active user .*'{login}'"):
        sync_rows(cron_registry, config)
