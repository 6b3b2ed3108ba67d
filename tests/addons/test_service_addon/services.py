"""A service that notes its start and stop in the file named by ``LLMJOBS_TEST_SERVICE_LOG``
(no service when that variable is unset)."""

import os
from pathlib import Path


class NotingService:
    name = "notes"

    def __init__(self, path: Path):
        self.path = path

    def start(self) -> None:
        self._note("started")

    def stop(self, timeout: float) -> None:
        self._note(f"stopped {timeout}")

    def _note(self, line: str) -> None:
        with self.path.open("a") as handle:
            handle.write(f"{os.getpid()} {line}\n")


def services(registry):
    path = os.environ.get("LLMJOBS_TEST_SERVICE_LOG")
    return [NotingService(Path(path))] if path else []
