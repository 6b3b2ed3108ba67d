"""Which jobs: the filters of the job list, shared by the HTTP API, the pages and the CLI.

``JobFilter(state=["failed"], q="timeout").domain()`` is the ORM domain of those jobs; the
record rules still decide which of them the user sees.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from .models.llm_generation_job import STATES

JobState = Literal[tuple(state for state, _label in STATES)]  # type: ignore[valid-type]


class JobFilter(BaseModel):
    state: list[JobState] | None = None
    provider_id: int | None = None
    model_id: int | None = None
    user_id: int | None = None
    thread_id: int | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    finished_after: dt.datetime | None = None
    finished_before: dt.datetime | None = None
    q: str | None = Field(None, max_length=200, description="Text in the job's error")

    def domain(self) -> list:
        terms: list = []
        if self.state:
            terms.append(("state", "in", list(self.state)))
        for name in ("provider_id", "model_id", "user_id", "thread_id"):
            if getattr(self, name) is not None:
                terms.append((name, "=", getattr(self, name)))
        for name, column, operator in (
            ("created_after", "create_date", ">="),
            ("created_before", "create_date", "<"),
            ("finished_after", "completed_at", ">="),
            ("finished_before", "completed_at", "<"),
        ):
            if getattr(self, name) is not None:
                terms.append((column, operator, getattr(self, name)))
        if self.q:
            terms.append(("error_message", "ilike", self.q))
        return terms
