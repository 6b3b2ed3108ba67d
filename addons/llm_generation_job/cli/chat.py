"""``llmjobs chat``: a conversation thread in the terminal, as the database's superuser.

It reads one prompt per line (with line editing on a terminal; piped, each line of stdin is a
prompt), and streams each reply to stdout as it arrives, while stderr tells how it goes: which
way it went (queued or direct), the job's status, retries, and how it ended (tokens, finish
reason). So ``echo hi | llmjobs chat --provider p > reply.txt`` keeps the reply alone.

Ctrl-D or ``/quit`` ends the session. Ctrl-C during a reply stops that reply and keeps the
session: a queued job is cancelled (its worker stops the stream), a direct stream is closed;
either way the partial reply is kept, marked cancelled. A second Ctrl-C ends the session. The
exit status is 1 when any reply failed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from addons.llm_thread.cli import lookup
from core.exceptions import UserError

from ..follow import wait_finished
from ..store import JobStore

if TYPE_CHECKING:
    from core.registry import Registry

JOB = "llm.generation.job"
STOP_TIMEOUT = 30.0  # seconds to wait for a cancelled job's worker to let it go
QUIT = ("/quit", "/exit")


class StopReply(GeneratorExit):
    """Ctrl-C during a reply. A GeneratorExit because the interrupt usually lands inside the
    generation's own code (waiting for the provider's next token): a direct generation takes
    it as its consumer stopping (the reply kept, marked cancelled), where any other exception
    would record the reply as failed."""


@contextlib.contextmanager
def _ctrl_c_stops_the_reply() -> Iterator[None]:
    """While the block runs, the first Ctrl-C raises StopReply; the next ones are
    KeyboardInterrupt again (they end the session)."""

    def stop(_signum, _frame) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise StopReply()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _status(message: str, **style) -> None:
    click.secho(message, err=True, **style)


@dataclass
class _ReplyView:
    """Shows one reply's updates: its text on stdout, everything else on stderr."""

    started: float
    job_id: int | None = None
    open_line: bool = False
    failed: bool = False

    def end_line(self) -> None:
        if self.open_line:
            click.echo()
            self.open_line = False

    def show(self, update: dict) -> None:
        kind = update["type"]
        if kind == "message_chunk":
            if update["content"]:
                click.echo(update["content"], nl=False)
                self.open_line = True
            return
        if kind in ("message_create", "message_update"):
            return
        self.end_line()
        if kind == "generation_mode":
            _status(f"[{update['mode']}: {update['reason']}]", dim=True)
        elif kind == "job_status":
            self.job_id = update["job_id"]
            _status(f"[job {update['job_id']}: {update['message']}]", fg="cyan")
        elif kind == "restart":
            _status(
                f"[job {update['job_id']}: attempt {update['attempt']} starts the reply over]",
                fg="yellow",
            )
        elif kind == "done":
            _status(self._done(update.get("message") or {}), dim=True)
        elif kind == "error":
            self.failed = True
            _status(f"[error] {update['error']}", fg="red")
        elif kind == "cancelled":
            _status(f"[cancelled] {update['message']}", fg="yellow")

    def _done(self, message: dict) -> str:
        details = [f"{time.monotonic() - self.started:.1f} s"]
        if message.get("completion_tokens"):
            details.insert(0, f"{message['completion_tokens']} tokens")
        if message.get("finish_reason"):
            details.append(f"finish: {message['finish_reason']}")
        return f"[done: {', '.join(details)}]"


@dataclass
class ChatSession:
    registry: Registry
    thread_id: int
    use_queue: bool | None
    failures: int = 0

    def reply(self, prompt: str) -> None:
        """Generate and show the reply to ``prompt``; Ctrl-C stops it."""
        view = _ReplyView(started=time.monotonic())
        try:
            with _ctrl_c_stops_the_reply():
                self._generate(prompt, view)
        except StopReply:
            view.end_line()
            self._stop(view)
        except UserError as error:  # e.g. the thread is still busy with another reply
            view.end_line()
            view.failed = True
            _status(f"[error] {error}", fg="red")
        if view.failed:
            self.failures += 1

    def _generate(self, prompt: str, view: _ReplyView) -> None:
        with self.registry.environment() as env:
            thread = env["llm.thread"].browse(self.thread_id)
            updates = thread.generate_response(prompt, use_queue=self.use_queue)
            try:
                for update in updates:
                    view.show(update)
            finally:
                updates.close()  # a direct stream stops here when Ctrl-C came between updates

    def _stop(self, view: _ReplyView) -> None:
        """After Ctrl-C: cancel the reply's job, if it was queued, and wait until its worker
        has let it go (the thread takes one reply at a time)."""
        with self.registry.environment() as env:
            jobs = env[JOB]
            job = (
                jobs.browse(view.job_id) if view.job_id else JobStore(env).busy_job(self.thread_id)
            )
            if not job:
                _status("[stopped: the partial reply is kept, marked cancelled]", fg="yellow")
                return
            job_id = job.id
            try:
                job.action_cancel()
            except UserError as error:
                _status(f"[stopped following job {job_id}: {error}]", fg="yellow")
                return
        try:
            wait_finished(self.registry, [job_id], timeout=STOP_TIMEOUT)
        except TimeoutError:
            _status(f"[job {job_id}: cancel requested; its worker has not let it go yet]")
            return
        _status(f"[job {job_id} cancelled: the partial reply is kept]", fg="yellow")


def _open_thread(
    registry: Registry, thread_id: int | None, provider_ref: str | None, model_ref: str | None
) -> int:
    """The thread to talk in (a new one unless ``--thread``); says which, on stderr."""
    if thread_id and (provider_ref or model_ref):
        raise click.UsageError(
            "--thread continues a thread on its own provider and model: give it alone, or "
            "--provider/--model to start a new thread."
        )
    with registry.environment() as env:
        if thread_id:
            thread = lookup.thread(env, thread_id)
            provider = thread.provider_id
        else:
            provider = lookup.provider(env, provider_ref) if provider_ref else _only_provider(env)
            model = lookup.model(env, provider, model_ref) if model_ref else env["llm.model"]
            thread = env["llm.thread"].create(
                {
                    "name": f"Terminal chat {time.strftime('%Y-%m-%d %H:%M:%S')}",
                    "provider_id": provider.id,
                    "model_id": model.id or False,
                }
            )
        try:
            model_name = thread.model_id.name or provider._model_name(None)
        except UserError:
            raise click.ClickException(
                f"Provider '{provider.name}' has no chat model: add one with `llmjobs "
                f"providers set {provider.name} --default-model NAME`."
            ) from None
        opened = thread.id
        banner = (
            f"Thread {opened} ({thread.name}) with provider '{provider.name}', model {model_name}."
        )
    _status(banner, bold=True)
    return opened


def _only_provider(env):
    providers = env["llm.provider"].search([], limit=lookup.LISTED + 1)
    if len(providers) == 1:
        return providers
    if not providers:
        raise click.ClickException(
            "There is no provider yet: add one with `llmjobs providers add NAME --service ...`."
        )
    raise click.UsageError(
        "Name the provider with --provider: the providers are "
        f"{lookup.listing(providers.mapped('name'))}."
    )


def _prompts() -> Iterator[str]:
    """The user's prompts until Ctrl-D or /quit: typed on a terminal, else one per line."""
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    while True:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:
                click.echo()
                return
            except KeyboardInterrupt:
                click.echo()
                _status("(Ctrl-D or /quit leaves)", dim=True)
                continue
        else:
            line = sys.stdin.readline()
            if not line:
                return
        prompt = line.strip()
        if prompt in QUIT:
            return
        if prompt:
            yield prompt


@click.command()
@click.option(
    "--thread", "thread_id", type=click.IntRange(min=1), metavar="ID", help="Continue this thread."
)
@click.option(
    "--provider",
    metavar="NAME_OR_ID",
    help="Start a thread with this provider (needed when there are several).",
)
@click.option(
    "--model", metavar="NAME", help="The model of the new thread (default: the provider's)."
)
@click.option(
    "--queue/--direct",
    "use_queue",
    default=None,
    help="Replies from a worker through the provider's queue, or streamed directly from "
    "here (default: queued when a live worker serves the queue).",
)
@click.pass_obj
def chat(
    obj, thread_id: int | None, provider: str | None, model: str | None, use_queue: bool | None
) -> None:
    """Talk with a model in the terminal: a line per prompt, the reply streamed as it comes.
    Ctrl-C stops a reply; Ctrl-D or /quit leaves."""
    registry = obj.registry()
    session = ChatSession(registry, _open_thread(registry, thread_id, provider, model), use_queue)
    if sys.stdin.isatty():
        _status("Ctrl-C stops a reply; Ctrl-D or /quit leaves.", dim=True)
    for prompt in _prompts():
        session.reply(prompt)
    if session.failures:
        raise SystemExit(1)
