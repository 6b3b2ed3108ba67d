"""Property tests of the command line's arguments (hypothesis): random values for the options
of ``llmjobs`` commands that take numbers, names and dates, run through click's ``CliRunner``
on ``core.cli.main`` with a real SQLite database.

Each invocation succeeds, or fails as ``llmjobs`` shows it: a usage error (exit 2) or one
``Error: ...`` line (exit 1; ``core.cli.run`` prints the message of a ``UserError`` or
``RegistryError`` that way); never an unexpected exception, which would be a traceback. A
failed ``user create`` creates no user.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core import Registry
from core.cli import _mount_addon_commands, main
from core.exceptions import DatabaseUnavailable, RegistryError, UserError

PROPERTY = settings(max_examples=40)  # the "llmjobs" profile: conftest.py
SHOWN_AS_ONE_LINE = (RegistryError, UserError, DatabaseUnavailable)  # by core.cli.run
STATES = ["draft", "queued", "running", "completed", "failed", "cancelled"]

# What an argv can hold: any text but NUL (the OS refuses it); a byte that is not UTF-8
# arrives as a lone surrogate (Python's surrogateescape).
words = st.text(st.characters(exclude_characters="\x00"), max_size=8) | st.sampled_from(
    ["\udcff", " ", "-", "--", "0", "-1", "1e400", "nan", "inf", "99999999999999999999"]
)
numbers = st.integers(-5, 10**12).map(str) | st.sampled_from(["2147483648", "1.5", "0x10"])
ids = numbers | words
moments = st.one_of(
    st.builds("{}{}".format, st.integers(0, 10**20), st.sampled_from("smhdw")),
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.sampled_from(["2026-13-01", "9999-12-31T23:59:59-23:00", "0001-01-01T00:00+05:00"]),
    words,
)


def _option(name: str, values):
    return st.tuples(st.just(name), values).map(list)


NO_ARGUMENTS = st.just([])


def _command(prefix: list[str], *options, arguments=NO_ARGUMENTS):
    """``prefix``, then up to three of ``options`` (each a list of words), then ``arguments``."""
    chosen = (
        st.lists(st.one_of(*options), max_size=3).map(lambda parts: [w for p in parts for w in p])
        if options
        else NO_ARGUMENTS
    )
    return st.tuples(chosen, arguments).map(lambda pair: [*prefix, *pair[0], *pair[1]])


filters = [
    _option("--state", st.sampled_from(STATES) | words),
    _option("--created-after", moments),
    _option("--created-before", moments),
    _option("--finished-after", moments),
    _option("--provider", ids),
    _option("--model", ids),
    _option("--user", ids),
    _option("--thread", ids),
    _option("--search", words | st.just("x" * 250)),
]
commands = st.one_of(
    _command(
        ["jobs", "list"],
        *filters,
        _option("--limit", numbers),
        _option("--cursor", ids),
        st.just(["--json"]),
    ),
    _command(["jobs", "show"], st.just(["--json"]), arguments=ids.map(lambda v: [v])),
    _command(
        ["jobs", "retry"],
        *filters,
        st.just(["--all-matching"]),
        st.just(["-y"]),
        arguments=st.lists(ids, max_size=2),
    ),
    _command(
        ["jobs", "cancel"],
        *filters,
        st.just(["--all-matching", "-y"]),
        arguments=st.lists(ids, max_size=2),
    ),
    _command(
        ["queues", "set"],
        _option("--limit", numbers),
        _option("--retry-delay", numbers),
        _option("--attempt-deadline", numbers | words),
        st.just(["--no-auto-retry"]),
        arguments=(st.sampled_from(["sim"]) | ids).map(lambda v: [v]),
    ),
    _command(["queues", "pause"], arguments=ids.map(lambda v: [v])),
    _command(
        ["user", "create"],
        _option("--name", words),
        _option("--group", st.sampled_from(["base.group_user", "llm_thread.group_llm_manager"])),
        _option("--group", words),
        arguments=st.tuples(words, words | st.just("correct horse")).map(
            lambda pair: ["--login", pair[0], "--password", pair[1]]
        ),
    ),
    _command(
        ["cron", "run"],
        arguments=(st.just("cleanup_old_generation_jobs") | words).map(lambda v: [v]),
    ),
    _command(
        ["providers", "set"],
        _option("--timeout", numbers | words),
        _option("--default-model", words),
        arguments=(st.just("sim") | ids).map(lambda v: [v]),
    ),
    _command(["workers"], st.just(["--all"]), st.just(["--json"])),
    _command(
        ["diagnostics"],
        _option("--errors-since-hours", numbers | words | st.floats().map(str)),
        st.just(["--json"]),
        st.just(["--show-errors"]),
    ),
)


@pytest.fixture(scope="module")
def mounted():
    _mount_addon_commands([])  # the addons' commands, as `llmjobs` mounts them


@pytest.fixture
def database(tmp_path, mounted, monkeypatch):
    """A SQLite database with the schema, a provider 'sim' and its queue; its URL."""
    from .conftest import make_provider

    monkeypatch.delenv("LLMJOBS_DB_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    registry = Registry(url)
    try:
        with registry.environment() as env:
            provider, _model = make_provider(env)
            env["llm.generation.queue"]._get_or_create_queue(provider.id)
    finally:
        registry.close()
    return url


def _users(url: str) -> int:
    registry = Registry(url, sync_schema=False)
    try:
        with registry.environment(readonly=True) as env:
            return env["res.users"].search_count([])
    finally:
        registry.close()


def check(result: Result, args: list[str]) -> None:
    """Success, a usage error or one `Error:` line; nothing else."""
    error = result.exception
    if error is not None and not isinstance(error, SystemExit):
        assert isinstance(error, SHOWN_AS_ONE_LINE), (args, result.exc_info)
        message = str(error)
        assert message and "\n" not in message, (args, message)
        return
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "Error: " in result.output, (args, result.output)


@PROPERTY
@given(args=commands)
# Each was a raw exception (a traceback) before it was fixed.
@example(args=["jobs", "list", "--created-after", "99999999999999999999d"])  # OverflowError
@example(args=["jobs", "list", "--created-after", "9999999w"])  # date value out of range
@example(args=["jobs", "list", "--thread", "99999999999"])  # PostgreSQL: integer out of range
@example(args=["jobs", "show", "99999999999"])
@example(args=["user", "create", "--login", "s", "--password", "\udcff" * 8])  # UnicodeEncode
@example(args=["cron", "run", "\udcff"])  # UnicodeEncodeError from the driver
@example(args=["diagnostics", "--errors-since-hours", "inf"])  # OverflowError
@example(args=["diagnostics", "--errors-since-hours", "nan"])  # ValueError
@example(args=["providers", "set", "sim", "--timeout", "nan"])  # stored a NaN timeout
# An error of two lines: "No record has the external id '\n'." (now repr'd)
@example(args=["user", "create", "--group", "\n", "--login", "x", "--password", "x" * 8])
def test_arguments_succeed_or_fail_in_one_line(database, args):
    before = _users(database) if args[:2] == ["user", "create"] else None
    result = CliRunner().invoke(main, ["--db-url", database, *args], input="")
    check(result, args)
    if before is not None and result.exit_code != 0:
        assert _users(database) == before, "a failed `user create` created a user"
