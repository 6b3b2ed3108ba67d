"""The API key, pasted with a trailing newline or space, in no log (at debug level, in this
process and in worker processes), error text or database row, whatever the generations do;
keys that cannot be sent in a header are refused when written."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from addons.llm_generation_job.follow import wait_finished
from core import ValidationError
from core.redaction import forms

from .conftest import make_provider

pytestmark = pytest.mark.slow

KEY = "sk-live-4f9a2c7e1b"


def database_dump(registry) -> str:
    with registry.environment(readonly=True) as env:
        return "\n".join(
            repr(env.cr.execute(sa.select(table)).all())
            for table in registry.metadata.sorted_tables
        )


@pytest.mark.parametrize("pasted", [KEY + "\n", KEY + " ", "\t" + KEY + "\r\n"])
def test_a_pasted_key_leaks_nowhere(registry, make_simulator, start_workers, caplog, pasted):
    caplog.set_level(logging.DEBUG)
    server = make_simulator("openai", api_key=KEY)
    with registry.environment() as env:
        provider, model = make_provider(env, api_base=server.url)
        provider.write({"api_key": pasted})
        env["llm.generation.queue"]._get_or_create_queue(provider.id).write(
            {"retry_delay_minutes": 0}
        )
        assert provider.api_key.get_secret_value() == KEY  # stored without the whitespace
        threads = env["llm.thread"].create(
            [{"name": f"t{n}", "provider_id": provider.id, "model_id": model.id} for n in range(4)]
        )
        thread_ids, provider_id = threads.ids, provider.id
    workers = start_workers(1, options=["-vv"])  # debug logging in the worker too
    texts: list[str] = []
    with registry.environment() as env:
        direct_ok, direct_bad, queued_ok, queued_bad = env["llm.thread"].browse(thread_ids)
        texts.append(repr(list(direct_ok.generate_response("hello", use_queue=False))))
        texts.append(
            repr(list(direct_bad.generate_response("[sim:status=500] no", use_queue=False)))
        )
        texts.append(repr(list(queued_ok.generate_response("hello", use_queue=True))))
        texts.append(
            repr(list(queued_bad.generate_response("[sim:status=400] no", use_queue=True)))
        )
    with registry.environment() as env:  # a wrong key: the provider answers 401
        env["llm.provider"].browse(provider_id).write({"api_key": KEY[:-1] + "x\n"})
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_ids[0])
        texts.append(repr(list(thread.generate_response("again", use_queue=True))))
    with registry.environment(readonly=True) as env:
        jobs = env["llm.generation.job"].search([])
        wait_finished(registry, jobs.ids, timeout=30)
        env.cr.commit()
        outcomes = [u for u in jobs.mapped("state")]
        messages = env["llm.message"].search([])
        texts += jobs.mapped("error_message") + messages.mapped("error")
        texts += jobs.mapped("attempt_ids.error_message")
        assert sorted(outcomes) == ["completed", "failed", "failed"]
        assert any("401" in (e or "") for e in jobs.mapped("error_message"))
    time.sleep(0.5)  # the worker's last lines reach its log
    texts += [caplog.text, database_dump(registry), *(w.log.read_text() for w in workers)]
    assert "DEBUG" in texts[-1]  # the worker did log at debug level
    for text in texts:
        for form in forms(KEY) | forms(pasted) | forms(KEY[:-1] + "x\n"):
            assert form not in (text or ""), f"the key appears as {form!r}"


@pytest.mark.parametrize(
    ("key", "position"),
    [("sk-abc def-123", 7), ("sk-abc\x00def123", 7), ("sk-ключ-123456", 4), ("sk-abc\ndef123", 7)],
)
def test_a_key_that_cannot_be_sent_in_a_header_is_refused(env, key, position):
    provider, _model = make_provider(env)
    with pytest.raises(ValidationError, match=f"character {position} of") as refused:
        provider.write({"api_key": key})
    for form in forms(key):
        assert form not in str(refused.value)
    with pytest.raises(ValidationError, match="an API key is printable ASCII"):
        env["llm.provider"].create({"name": "other", "service": "openai", "api_key": key})
    assert provider.api_key.get_secret_value() == "sk-test"  # unchanged
