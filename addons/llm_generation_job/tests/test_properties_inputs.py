"""Property tests of what an ordinary user gives a generation (hypothesis), on SQLite and
PostgreSQL: job values to ``llm.generation.job`` create + ``action_queue``, and a message
with options to ``thread.generate_response(..., use_queue=True)``.

Either the job is queued, on the thread's provider, for the user, or the call fails with a
``UserError`` (validation, access) whose message says what is wrong; after a failure nothing
was written: jobs, messages, attempts and stream logs counted in a fresh transaction are what
they were before.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from addons.llm_generation_job.store import STORE_FIELDS
from core.exceptions import UserError

from .conftest import make_provider

PROPERTY = settings(max_examples=100)  # the "llmjobs" profile: conftest.py
COUNTED = (
    "llm.generation.job",
    "llm.message",
    "llm.generation.job.attempt",
    "llm.generation.job.chunk",
    "llm.thread",
)


class _Deep(list):
    """A list nested deeper than Python recurses, with a short repr (for reports)."""

    def __repr__(self) -> str:
        return "<a list nested 5000 deep>"


def _deep(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return _Deep([value])


awkward_texts = st.sampled_from(["a\x00b", "\ud800", "é" * 3, "", " ", "x" * 300, "\n"])
texts = st.text(max_size=8) | awkward_texts
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
junk = json_like | st.sampled_from([b"x", {1, 2}, object, (1, 2), _deep(5000), 1j])
option_names = st.sampled_from(
    ["temperature", "max_tokens", "seed", "top_p", "model", "messages", "stream", "", "a\x00"]
) | st.text(max_size=5)
options = st.dictionaries(option_names, junk, max_size=3)


@pytest.fixture
def world(registry, users):
    """Alice's thread (with a message of hers), Bob's thread, and a model of another
    provider; committed. Returns their ids."""
    with registry.environment() as env:
        provider, model = make_provider(env)
        _other, other_model = make_provider(env, name="other")
        ids = {"model": model.id, "other_model": other_model.id, **users}
        for user in ("alice", "bob"):
            thread = (
                env["llm.thread"]
                .with_user(users[user])
                .create({"name": f"{user}'s chat", "provider_id": provider.id})
            )
            ids[f"{user}_thread"] = thread.id
            ids[f"{user}_message"] = thread.message_post(body="earlier").id
        ids["provider"] = provider.id
        return ids


def _counts(registry) -> dict[str, int]:
    with registry.environment(readonly=True) as env:
        return {name: env[name].search_count([]) for name in COUNTED}


def _cancel_active(registry) -> None:
    with registry.environment() as env:
        for job in env["llm.generation.job"].search([("state", "=", "queued")]):
            job.action_cancel()


def _assert_clear(error: UserError) -> None:
    message = str(error)
    assert message and message != "None" and "Traceback" not in message
    assert len(message.splitlines()) <= 3, message


def _refs(world):
    """Values of the reference fields: ours, someone else's, missing, or not ids at all."""
    ref = st.sampled_from
    return {
        "thread_id": ref([world["alice_thread"], world["bob_thread"], 9999, 0, -1, 2**40]) | junk,
        "model_id": ref([world["model"], world["other_model"], 9999, False]) | junk,
        "provider_id": ref([world["provider"], world["provider"] + 1, False]) | junk,
        "input_message_id": ref([world["alice_message"], world["bob_message"], 9999, False]) | junk,
        "user_id": ref([world["alice"], world["bob"], world["manager"]]) | junk,
    }


@st.composite
def job_values(draw, world) -> dict:
    """Values an ordinary user might pass: sensible ones (their thread, a model of its
    provider, a priority of theirs, JSON options) with up to two drawn from anything: another
    user's records, missing ones, wrong types, the store's own fields."""
    values = draw(
        st.fixed_dictionaries(
            {"thread_id": st.just(world["alice_thread"])},
            optional={
                "model_id": st.just(world["model"]),
                "priority": st.integers(-5, 0),
                "generation_inputs": st.fixed_dictionaries(
                    {},
                    optional={
                        "user_message": st.text(max_size=8),
                        "options": st.dictionaries(
                            st.sampled_from(["temperature", "seed"]), st.integers(0, 3)
                        ),
                    },
                ),
                "name": st.text(max_size=8),
            },
        )
    )
    assert {"state", "cancel_requested"} <= STORE_FIELDS
    wrong = {
        **_refs(world),
        "priority": st.integers(-5, 5) | st.integers() | junk,
        "max_retries": st.integers(0, 5) | junk,
        "generation_inputs": st.fixed_dictionaries(
            {}, optional={"user_message": texts, "options": options | junk}
        )
        | junk,
        "name": texts | junk,
        "nope": junk,
        "state": st.sampled_from(["queued", "completed"]),  # the store's alone
        "cancel_requested": st.booleans(),
    }
    for name in draw(st.lists(st.sampled_from(sorted(wrong)), max_size=2, unique=True)):
        values[name] = draw(wrong[name])
    if draw(st.integers(0, 9)) == 5:  # now and then (not the boundary hypothesis favours)
        del values["thread_id"]
    return values


@PROPERTY
@given(data=st.data())
def test_job_values_queue_a_job_or_fail_writing_nothing(registry, world, data):
    values = data.draw(job_values(world), label="values")
    before = _counts(registry)
    try:
        with registry.environment(user=world["alice"]) as env:
            job = env["llm.generation.job"].create(values)
            job.action_queue()
            job_id = job.id
    except UserError as error:
        _assert_clear(error)
        assert _counts(registry) == before, f"{values} failed ({error}) but wrote rows"
        return
    with registry.environment(readonly=True) as env:
        job = env["llm.generation.job"].browse(job_id)
        thread = job.thread_id
        assert job.state == "queued" and thread.id == world["alice_thread"]
        assert job.user_id.id == world["alice"], "a user queued a job in someone else's name"
        assert job.provider_id == thread.provider_id and job.priority <= 0
        assert job.max_retries == 3  # the default: setting it is for managers
    _cancel_active(registry)


# Each reached the database as a raw driver error before the ORM's fields checked the value
# (core/fields.py), or a raw Python error before the model checked it.
EXAMPLES = [
    ("priority", "high"),  # TypeError comparing 'high' > 0 (llm_generation_job)
    ("priority", 2**40),  # PostgreSQL: integer out of range
    ("thread_id", 2**40),  # PostgreSQL: integer out of range (browse)
    ("model_id", 2**40),
    ("input_message_id", 2**40),
    ("name", "a\x00b"),  # PostgreSQL: text cannot contain NUL
    ("generation_inputs", {"options": {"a": "\x00"}}),  # PostgreSQL: jsonb refuses \u0000
    ("generation_inputs", {"user_message": "\ud800"}),  # PostgreSQL: invalid json
    ("generation_inputs", {"options": {"a": _deep(5000)}}),  # RecursionError
]


def test_values_that_once_reached_the_database_raw(registry, world):
    before = _counts(registry)
    for name, value in EXAMPLES:
        with (
            pytest.raises(UserError) as error,
            registry.environment(user=world["alice"]) as env,
        ):
            env["llm.generation.job"].create({"thread_id": world["alice_thread"], name: value})
        _assert_clear(error.value)
    assert _counts(registry) == before


@PROPERTY
@given(message=texts | junk | st.none(), options=options)
@example(message="a\x00b", options={})  # PostgreSQL: text cannot contain NUL
@example(message="\ud800", options={})  # UnicodeEncodeError from the driver
@example(message="hi", options={"temperature": "\x00"})  # PostgreSQL: jsonb refuses \u0000
@example(message="hi", options={"t": "\ud800"})  # PostgreSQL: invalid input syntax for json
@example(message="hi", options={"a\x00": 1})
@example(message="hi", options={"deep": _deep(5000)})  # RecursionError
def test_generate_response_queues_or_fails_writing_nothing(registry, world, message, options):
    before = _counts(registry)
    try:
        with registry.environment(user=world["alice"]) as env:
            thread = env["llm.thread"].browse(world["alice_thread"])
            updates = thread.generate_response(message, use_queue=True, **options)
            first = next(updates)
            updates.close()
    except UserError as error:
        _assert_clear(error)
        assert _counts(registry) == before, f"{message!r} {options} failed but wrote rows"
        return
    assert first["type"] in ("message_create", "job_status")
    with registry.environment(readonly=True) as env:
        job = env["llm.thread"].browse(world["alice_thread"]).generation_job_ids[:1]
        assert job.state == "queued" and job.user_id.id == world["alice"]
        assert job.generation_inputs["user_message"] == message
        if message:
            assert job.input_message_id.body == message
    _cancel_active(registry)
