"""Commands of the llm_generation_job addon, mounted on ``llmjobs`` by the core CLI."""

from .chat import chat
from .demo import demo
from .diagnostics import diagnostics
from .jobs import jobs
from .queues import queues
from .usage import usage
from .workers import workers

commands = [demo, jobs, queues, workers, usage, chat, diagnostics]
