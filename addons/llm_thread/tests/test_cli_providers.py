"""``llmjobs providers`` as an operator runs it (the real executable, on SQLite and
PostgreSQL): the API key comes from an environment variable, a file or a hidden prompt, is
stored, and appears in no output; ``test`` asks a real simulator and says what it answered,
or what went wrong and what to do."""

from __future__ import annotations

import json
import secrets

from addons.llm_thread.cli.providers import TEST_MAX_TOKENS, TEST_PROMPT
from addons.llm_thread.simulator import reply_chunks
from core.redaction import forms

from .command_line import Llmjobs, table


def _key(kind: str) -> str:
    return f"sk-{kind}-{secrets.token_hex(12)}"


def _shows_no_key(result, *keys: str) -> None:
    for key in keys:
        for form in forms(key):
            assert form not in result.stdout + result.stderr, "an API key was printed"


def test_a_key_comes_from_the_environment_a_file_or_a_prompt_and_is_never_shown(
    registry, db_url, tmp_path, openai_server
):
    cli = Llmjobs(db_url, tmp_path)
    from_env, from_file, from_prompt = _key("env"), _key("file"), _key("prompt")
    key_file = tmp_path / "key.txt"
    key_file.write_text(from_file + "\n")  # as an editor saves it
    results = [
        cli.run(
            "providers", "add", "sim", "--service", "openai", "--api-base", openai_server.url,
            "--api-key-env", "SIM_KEY", "--default-model", "sim-model", SIM_KEY=from_env,
        ),
        cli.run("providers", "add", "claude", "--service", "anthropic", "--timeout", "5",
                "--api-key-file", str(key_file)),
        cli.run("providers", "add", "local", "--service", "ollama", "--api-key-prompt",
                input=from_prompt + "\n"),
    ]  # fmt: skip
    for result in results:
        assert result.returncode == 0, result.stderr
    assert results[0].stdout.startswith("Added provider 'sim' (id ")
    assert "API key set, default model sim-model." in results[0].stdout
    assert "llmjobs providers test sim" in results[0].stdout
    with registry.environment(readonly=True) as env:
        keys = {p.name: p.api_key.get_secret_value() for p in env["llm.provider"].search([])}
        assert keys == {"sim": from_env, "claude": from_file, "local": from_prompt}
        [model] = env["llm.model"].search([("provider_id.name", "=", "sim")])
        assert (model.name, model.default, model.model_use) == ("sim-model", True, "chat")

    removed = cli.run("providers", "set", "claude", "--no-api-key", "--api-base", "")
    assert removed.returncode == 0, removed.stderr
    assert "no api_base, timeout 5 s, no API key" in removed.stdout
    listed = cli.run("providers", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {row["Name"]: row for row in table(listed.stdout)}
    assert {name: row["API key"] for name, row in rows.items()} == {
        "claude": "not set",
        "local": "set",
        "sim": "set",
    }
    assert rows["sim"]["API base"] == openai_server.url and rows["sim"]["Service"] == "openai"
    assert rows["sim"]["Models (*: default)"] == "sim-model*"
    with registry.environment(readonly=True) as env:
        assert not env["llm.provider"].search([("name", "=", "claude")]).api_key
    for result in [*results, removed, listed]:
        _shows_no_key(result, from_env, from_file, from_prompt)


def test_test_says_what_the_provider_answered_or_what_to_change(
    registry, db_url, tmp_path, openai_server, make_simulator
):
    right, wrong, any_key = _key("right"), _key("wrong"), _key("any")
    locked = make_simulator("openai", api_key=right)
    with registry.environment() as env:
        for name, url, key in (
            ("sim", openai_server.url, any_key),
            ("locked", locked.url, wrong),
        ):
            provider = env["llm.provider"].create(
                {"name": name, "service": "openai", "api_base": url, "api_key": key}
            )
            env["llm.model"].create({"name": "sim-model", "provider_id": provider.id})
    cli = Llmjobs(db_url, tmp_path)

    answered = cli.run("providers", "test", "sim")
    assert answered.returncode == 0, answered.stderr
    record = dict(line.split(":", 1) for line in answered.stdout.splitlines()[1:])
    assert answered.stdout.startswith("Provider 'sim' answered.")
    expected = "".join(reply_chunks(TEST_PROMPT, 20)[:TEST_MAX_TOKENS]).strip()
    assert record["Reply"].strip() == expected
    assert record["Model"].strip() == "sim-model"
    assert record["Latency"].strip().endswith("s)")  # "0.012 s (first token after 0.004 s)"
    assert record["Finish"].strip() == "length"
    assert record["Tokens"].strip().endswith(f"in, {TEST_MAX_TOKENS} out")
    assert openai_server.stats()["requests"] == 1

    refused = cli.run("providers", "test", "locked", "--json")
    assert refused.returncode == 1
    failure = json.loads(refused.stdout)
    assert failure["ok"] is False and failure["model"] == "sim-model"
    assert failure["error"].startswith("Provider 'locked' failed: HTTP 401 Unauthorized:")
    assert "llmjobs providers set locked --api-key-prompt" in failure["advice"]

    unset = cli.run("providers", "add", "more", "--service", "openai", "--api-key-env", "NO_SUCH")
    assert unset.returncode == 1
    assert unset.stderr.strip() == (
        "Error: The environment variable NO_SUCH is not set: export the key in it first, or "
        "use --api-key-prompt."
    )
    with registry.environment(readonly=True) as env:
        assert not env["llm.provider"].search([("name", "=", "more")])
    for result in (answered, refused):
        _shows_no_key(result, right, wrong, any_key)
