"""Commands of the llm_generation_job addon, mounted on ``llmjobs`` by the core CLI."""

from .demo import demo

commands = [demo]
