"""Running the real ``llmjobs`` executable on a test database, as an operator runs it, and
reading what it prints: ``Llmjobs(db_url, folder).run("jobs", "list")`` and
``table(result.stdout)`` (the plain aligned text printed when the output is piped)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.config import secret_key

LLMJOBS = shutil.which("llmjobs", path=str(Path(sys.executable).parent))


class Llmjobs:
    """``llmjobs`` on one database, from a folder of its own."""

    def __init__(self, db_url: str, folder: Path):
        secret_key()  # the key file exists before the commands look for it
        self.folder = folder
        self.env = {**os.environ, "LLMJOBS_DB_URL": db_url}

    def run(self, *args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess:
        """Run a command to its end (stdin: ``input``, else nothing); no traceback allowed."""
        result = subprocess.run(
            [LLMJOBS, *args],
            input=input or "",
            env={**self.env, **env},
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,  # no terminal: a hidden prompt reads stdin
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """Start a command with pipes for stdin, stdout and stderr (bytes)."""
        return subprocess.Popen(
            [LLMJOBS, *args],
            env={**self.env, **env},
            cwd=self.folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def table(output: str) -> list[dict[str, str]]:
    """The rows of a plain table (a header line, then aligned rows), by header; each column
    starts where its header does."""
    lines = [line for line in output.splitlines() if line.strip()]
    header = lines[0]
    names = [name.strip() for name in header.split("  ") if name.strip()]
    starts: list[int] = []
    for name in names:
        starts.append(header.index(name, starts[-1] + 1 if starts else 0))
    ends = [*starts[1:], None]
    return [
        {
            name: line[start:end].strip()
            for name, start, end in zip(names, starts, ends, strict=True)
        }
        for line in lines[1:]
    ]
