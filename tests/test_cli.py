"""The command line as an operator meets it: extra addon folders add to the project's, their
commands are mounted however the folder is given, configuration mistakes are one clear line,
and the default database and key are the same from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core import ValidationError, config

from .addon_factory import write_addon

LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent))
GREETING_COMMAND = """
import click


@click.command()
def greet():
    click.echo("hello from an extra addon")


commands = [greet]
"""


def llmjobs(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLMJOBS_")}
    return subprocess.run(
        [LLMJOBS, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: ")
    return line


@pytest.fixture
def extra_addons(tmp_path):
    """A folder with an addon that has a model and a command."""
    folder = tmp_path / "extra"
    folder.mkdir()
    name = write_addon(
        folder,
        "extra",
        models="""
        class Note(models.Model):
            _name = "extra.note"
            name = fields.Char()
        """,
        files={"cli.py": GREETING_COMMAND},
    )
    return folder, name


def test_an_extra_addon_folder_adds_to_the_projects(tmp_path, extra_addons):
    folder, _name = extra_addons
    db = f"sqlite:///{tmp_path / 'extra.db'}"
    for how in (["--addons-path", str(folder)], [f"--addons-path={folder}"]):
        result = llmjobs("--db-url", db, *how, "init", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "llm_generation_job" in result.stdout and "extra_" in result.stdout
        greeted = llmjobs(*how, "greet", cwd=tmp_path)  # its command is mounted too
        assert greeted.stdout.strip() == "hello from an extra addon", greeted.stderr
    greeted = llmjobs("greet", cwd=tmp_path, LLMJOBS_ADDONS_PATH=str(folder))
    assert greeted.stdout.strip() == "hello from an extra addon", greeted.stderr


def test_a_missing_addon_folder_is_one_line_even_for_help(tmp_path):
    for args in (["--help"], ["init"], ["--addons-path", str(tmp_path / "nope"), "--help"]):
        env = {} if "--addons-path" in args else {"LLMJOBS_ADDONS_PATH": str(tmp_path / "nope")}
        line = one_error_line(llmjobs(*args, cwd=tmp_path, **env))
        assert f"Addons path '{tmp_path / 'nope'}' is not a folder" in line


def test_a_broken_addon_command_file_is_one_line(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    name = write_addon(folder, "broken", files={"cli.py": "def oops(:\n    pass\n"})
    line = one_error_line(llmjobs("--help", cwd=tmp_path, LLMJOBS_ADDONS_PATH=str(folder)))
    assert f"Addon '{name}': its command file" in line and "SyntaxError" in line
    assert "line 1" in line


def test_a_cron_naming_an_unknown_model_is_refused(tmp_path):
    crons = tmp_path / "cron.yaml"
    crons.write_text(
        "- {name: cleanup, model: llm.generation.jobs, method: cleanup_old_jobs, interval: 1 day}\n"
    )
    db = f"sqlite:///{tmp_path / 'crons.db'}"
    for command in (["worker"], ["cron", "list"]):
        line = one_error_line(
            llmjobs("--db-url", db, *command, cwd=tmp_path, LLMJOBS_CRON_FILE=str(crons))
        )
        assert "Cron 'cleanup'" in line and "cron.yaml line 1" in line
        assert "no loaded addon defines the model 'llm.generation.jobs'" in line
        assert "did you mean 'llm.generation.job'?" in line


def test_the_default_database_and_key_are_the_same_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMJOBS_HOME", raising=False)
    monkeypatch.delenv("LLMJOBS_DB_URL", raising=False)
    monkeypatch.delenv("LLMJOBS_SECRET_KEY_FILE", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert config.database_url() == f"sqlite:///{config.PROJECT_DIR / 'var' / 'llmjobs.db'}"
    assert config.secret_key_file() == config.PROJECT_DIR / "var" / "secret.key"
    home = tmp_path / "home"
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        result = llmjobs("init", cwd=folder, LLMJOBS_HOME=str(home))
        assert result.returncode == 0, result.stderr
        assert f"Database: sqlite:///{home / 'llmjobs.db'}" in result.stdout
    assert (home / "llmjobs.db").exists()


def test_a_key_that_cannot_decrypt_names_where_it_came_from(make_registry, tmp_path, monkeypatch):
    from core import fields

    registry = make_registry(addons=["llm_thread"])
    with registry.environment() as env:
        provider_id = (
            env["llm.provider"]
            .create({"name": "p", "service": "openai", "api_key": "sk-written-with-the-first-key"})
            .id
        )
    other_key = tmp_path / "other.key"
    other_key.write_bytes(Fernet.generate_key())
    monkeypatch.delenv("LLMJOBS_SECRET_KEY", raising=False)
    monkeypatch.setenv("LLMJOBS_SECRET_KEY_FILE", str(other_key))
    monkeypatch.setattr(fields, "_FERNET", None)
    with (
        registry.environment() as env,
        pytest.raises(ValidationError, match=f"the key file {other_key}: it was written"),
    ):
        env["llm.provider"].browse(provider_id).api_key
