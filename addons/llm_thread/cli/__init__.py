"""Commands of the llm_thread addon, mounted on ``llmjobs`` by the core CLI: ``llmjobs
simulator`` serves a loopback provider to point providers at instead of real ones;
``llmjobs providers`` lists, adds, changes and tests providers."""

from __future__ import annotations

import click

from .providers import providers
from .simulator import simulator

commands: list[click.Command] = [simulator, providers]
