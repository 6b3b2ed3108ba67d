"""``llmjobs demo``: the whole system on one machine, on the configured database.

By default (``make run``) it starts a simulated OpenAI-compatible provider on loopback, the
web app with a worker in this process (``llmjobs serve --with-worker``: the job runner and
the crons), prints the dashboard's address and a login, streams one queued reply to the
terminal, then keeps a trickle of jobs flowing (some failing and retried, some failing for
good) until Ctrl-C (or SIGTERM), so that every part of the dashboard has something to show.

``--once`` runs one streamed reply and a batch of jobs, prints the queue's statistics and
exits: for scripts and tests.

``--api-base`` (or ``LLMJOBS_DEMO_API_BASE``) points it at a real provider instead, with
``--service`` and ``--model``; its key comes from ``LLMJOBS_DEMO_API_KEY`` only (never an
argument). No trickle runs against a real provider unless ``--interval`` asks for one: its
requests cost money.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import click

from ..follow import wait_finished
from .demo_traffic import DEMO_LOGIN, Trickle, demo_user

SIMULATED = "demo-simulator"
QUEUE_LIMIT = 3
PROMPT = "Why should LLM replies run as durable jobs?"


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    service: str
    api_base: str
    api_key: str | None
    model: str


@click.command()
@click.option(
    "--once",
    is_flag=True,
    help="Stream one reply, run a batch of jobs, print the queue's statistics and exit.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The web app's address.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8069,
    show_default=True,
    help="The web app's port (0: a free one).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds between the trickle's jobs [default: 3 with the simulator; 0, none, with a "
    "real provider].",
)
@click.option(
    "--jobs",
    "job_count",
    default=6,
    show_default=True,
    help="With --once: how many more jobs to run after the streamed one.",
)
@click.option(
    "--token-delay",
    type=click.FloatRange(min=0),
    default=0.03,
    show_default=True,
    help="Seconds between the simulated provider's tokens.",
)
@click.option(
    "--api-base",
    envvar="LLMJOBS_DEMO_API_BASE",
    default=None,
    help="A real provider's API base URL instead of the simulator (key: LLMJOBS_DEMO_API_KEY).",
)
@click.option(
    "--service",
    envvar="LLMJOBS_DEMO_SERVICE",
    type=click.Choice(["openai", "anthropic", "ollama"]),
    default="openai",
    show_default=True,
    help="The real provider's API (with --api-base).",
)
@click.option(
    "--model", envvar="LLMJOBS_DEMO_MODEL", default=None, help="The real provider's model name."
)
@click.pass_obj
def demo(
    obj,
    once: bool,
    host: str,
    port: int,
    interval: float | None,
    job_count: int,
    token_delay: float,
    api_base: str | None,
    service: str,
    model: str | None,
):
    """Run the whole system: a provider (simulated unless --api-base), a worker, the web app
    and its dashboard, one streamed reply, then a trickle of jobs until Ctrl-C."""
    from addons.llm_thread.simulator import SimulatorServer

    registry = obj.registry()
    with contextlib.ExitStack() as stack:
        simulator = None
        if api_base is None:
            simulator = stack.enter_context(
                SimulatorServer("openai", tokens=40, token_delay=token_delay)
            )
            spec = ProviderSpec(SIMULATED, "openai", simulator.url, "sk-demo", "sim-chat")
        else:
            spec = _real_provider(service, api_base, model)
        thread_id, provider_id, model_id = _setup(registry, spec, simulated=simulator is not None)
        if once:
            _run_once(registry, thread_id, provider_id, job_count)
            return
        if interval is None:
            interval = 3.0 if simulator else 0.0
        _run_live(registry, host, port, thread_id, Trickle(registry, model_id, simulator), interval)


def _real_provider(service: str, api_base: str, model: str | None) -> ProviderSpec:
    if not model:
        raise click.UsageError(
            "Name the real provider's model with --model or LLMJOBS_DEMO_MODEL "
            "(e.g. gpt-4o-mini, claude-3-5-haiku-latest, llama3.2)."
        )
    key = os.environ.get("LLMJOBS_DEMO_API_KEY") or None
    if key is None and service != "ollama":
        raise click.UsageError(
            f"Set the {service} API key in the LLMJOBS_DEMO_API_KEY environment variable."
        )
    return ProviderSpec(f"demo-{service}", service, api_base, key, model)


def _setup(registry, spec: ProviderSpec, simulated: bool) -> tuple[int, int, int]:
    """The demo's provider (its address updated: the simulator's port changes from run to
    run), model, queue and a new thread; returns their ids."""
    with registry.environment() as env:
        providers = env["llm.provider"]
        provider = providers.search([("name", "=", spec.name)], limit=1)
        values = {"service": spec.service, "api_base": spec.api_base}
        if spec.api_key:
            values["api_key"] = spec.api_key
        if provider:
            provider.write(values)
        else:
            provider = providers.create({"name": spec.name, **values})
        models = env["llm.model"]
        model = models.search(
            [("provider_id", "=", provider.id), ("name", "=", spec.model)], limit=1
        ) or models.create(
            {"name": spec.model, "provider_id": provider.id, "model_use": "chat", "default": True}
        )
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        # Retries wait for the provider's Retry-After, not minutes: a demo shows them happen.
        queue.write({"enabled": True, "max_concurrent_jobs": QUEUE_LIMIT, "retry_delay_minutes": 0})
        thread = env["llm.thread"].create(
            {
                "name": f"Demo {time.strftime('%H:%M:%S')}",
                "provider_id": provider.id,
                "model_id": model.id,
                "user_id": demo_user(env).id,
            }
        )
        kind = "simulated" if simulated else spec.service
        click.secho(
            f"Database:  {registry.engine.url.render_as_string(hide_password=True)}", dim=True
        )
        click.secho(
            f"Provider:  '{provider.name}' -> {spec.api_base} ({kind}), model {spec.model}, "
            f"queue limit {QUEUE_LIMIT}",
            dim=True,
        )
        return thread.id, provider.id, model.id


def _new_password(registry) -> str:
    """A fresh password for the demo login (LLMJOBS_DEMO_PASSWORD, or a random one)."""
    password = os.environ.get("LLMJOBS_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    with registry.environment() as env:
        demo_user(env).set_password(password)
    return password


def _stream_one(registry, thread_id: int) -> None:
    click.secho(f"\nyou> {PROMPT}", bold=True)
    with registry.environment(readonly=True) as env:
        uid = env["llm.thread"].browse(thread_id).user_id.id
    with registry.environment(user=uid) as env:  # the thread's user: their job
        thread = env["llm.thread"].browse(thread_id)
        for update in thread.generate_response(PROMPT, use_queue=True):
            kind = update["type"]
            if kind == "job_status":
                click.secho(f"[job {update['job_id']}: {update['message']}]", fg="cyan")
            elif kind == "message_chunk":
                click.echo(update["content"], nl=False)
            elif kind == "done":
                click.secho("\n[done]", fg="green")
            elif kind == "error":
                click.secho(f"\n[error] {update['error']}", fg="red")


# -- the live system ------------------------------------------------------------------------
def _run_live(
    registry, host: str, port: int, thread_id: int, trickle: Trickle, interval: float
) -> None:
    with _web_app(registry, host, port) as url:
        password = _new_password(registry)
        click.secho(f"Dashboard: {url}/web/", bold=True)
        click.secho(f"Login:     {DEMO_LOGIN} / {password}", bold=True)
        click.secho(f"API:       {url}/docs  (metrics at {url}/metrics)", dim=True)
        _stream_one(registry, thread_id)
        if interval:
            click.secho(
                f"\nA job every {interval:g} s now (some fail and are retried, some fail for "
                "good): watch them on the dashboard. Ctrl-C stops.",
                bold=True,
            )
        else:
            click.secho("\nServing until Ctrl-C.", bold=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops like Ctrl-C
        try:
            while True:
                if interval:
                    trickle.send()
                for line in trickle.news():
                    click.echo(line)
                time.sleep(interval or 1.0)
        except KeyboardInterrupt:
            click.secho("\nStopping: jobs in flight are handed back to the queue...", dim=True)


@contextlib.contextmanager
def _web_app(registry, host: str, port: int) -> Iterator[str]:
    """The web app with a worker (job runner and crons), served from a thread of this one."""
    from core.http import create_app
    from core.http.server import serving
    from core.worker import worker_services

    app = create_app(registry, worker_services(registry))
    try:
        with serving(app, host, port) as url:
            yield url
    except OSError as error:
        if port == 0:
            raise
        raise click.ClickException(
            f"Cannot listen on {host}:{port} ({error.strerror}): pass another --port "
            "(0 picks a free one)."
        ) from None


# -- --once ---------------------------------------------------------------------------------
def _run_once(registry, thread_id: int, provider_id: int, job_count: int) -> None:
    from ..runner import JobRunner

    runner = JobRunner(registry, concurrency=4, poll_interval=0.5)
    runner.start()
    try:
        _stream_one(registry, thread_id)
        _run_batch(registry, provider_id, job_count)
    finally:
        runner.stop(timeout=10)


def _run_batch(registry, provider_id: int, count: int) -> None:
    if count <= 0:
        return
    with registry.environment() as env:
        thread_model = env["llm.thread"]
        model_id = env["llm.model"].search([("provider_id", "=", provider_id)], limit=1).id
        job_ids = []
        for number in range(count):
            thread = thread_model.create(
                {"name": f"Batch {number + 1}", "provider_id": provider_id, "model_id": model_id}
            )
            job = env["llm.generation.job"].create(
                {
                    "thread_id": thread.id,
                    "priority": number % 2,
                    "generation_inputs": {"prompt": f"Batch question {number + 1}"},
                }
            )
            job.action_queue()
            job_ids.append(job.id)
    click.secho(
        f"\nQueued {count} more jobs; the queue runs at most {QUEUE_LIMIT} at once.", bold=True
    )

    def show(states: list[str]) -> None:
        summary = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        click.echo(f"\r  {summary:<60}", nl=False)

    with contextlib.suppress(TimeoutError):  # show the statistics anyway
        wait_finished(registry, job_ids, timeout=120, on_poll=show)
    click.echo()
    with registry.environment(readonly=True) as env:
        queue = env["llm.generation.queue"].search([("provider_id", "=", provider_id)])
        stats = queue.get_queue_stats()
    performance = stats["performance"]
    click.secho(f"\nQueue '{stats['provider_name']}' — health: {stats['queue_health']}", bold=True)
    counts = ", ".join(f"{n} {s}" for s, n in stats["job_counts"].items() if n)
    click.echo(f"  jobs:                {counts}")
    click.echo(f"  average wait:        {performance['avg_queue_time']:.2f} s")
    click.echo(f"  average processing:  {performance['avg_processing_time']:.2f} s")
    click.echo(f"  success rate:        {performance['success_rate']:.0f} %")
