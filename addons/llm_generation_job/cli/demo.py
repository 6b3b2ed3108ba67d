"""``llmjobs demo``: the whole system on one machine, on the configured database.

A simulated OpenAI-compatible provider on loopback, a job runner in this process (as
``llmjobs worker`` runs one), a thread whose reply is generated through the queue and
streamed to the terminal, then a batch of jobs and the queue's statistics.
"""

from __future__ import annotations

import contextlib
import time

import click

from ..follow import wait_finished

DEMO_PROVIDER = "demo-simulator"


@click.command()
@click.option(
    "--jobs",
    "job_count",
    default=6,
    show_default=True,
    help="How many more jobs to run through the queue after the streamed one.",
)
@click.option(
    "--token-delay",
    default=0.02,
    show_default=True,
    help="Seconds between the simulated provider's tokens.",
)
@click.pass_obj
def demo(obj, job_count: int, token_delay: float):
    """Run a queued generation end to end with a simulated provider and show the queue."""
    from addons.llm_thread.simulator import SimulatorServer

    from ..runner import JobRunner

    registry = obj.registry()
    with SimulatorServer("openai", tokens=40, token_delay=token_delay) as simulator:
        runner = JobRunner(registry, concurrency=4, poll_interval=0.5)
        runner.start()
        try:
            thread_id, provider_id = _setup(registry, simulator.url)
            _stream_one(registry, thread_id)
            _run_batch(registry, provider_id, job_count)
        finally:
            runner.stop(timeout=10)


def _setup(registry, api_base: str) -> tuple[int, int]:
    with registry.environment() as env:
        providers = env["llm.provider"]
        provider = providers.search([("name", "=", DEMO_PROVIDER)], limit=1)
        if provider:
            provider.api_base = api_base  # the simulator's port changes from run to run
        else:
            provider = providers.create(
                {
                    "name": DEMO_PROVIDER,
                    "service": "openai",
                    "api_base": api_base,
                    "api_key": "sk-demo",
                }
            )
        model = env["llm.model"].search([("provider_id", "=", provider.id)], limit=1) or env[
            "llm.model"
        ].create(
            {"name": "sim-chat", "provider_id": provider.id, "model_use": "chat", "default": True}
        )
        queue = env["llm.generation.queue"]._get_or_create_queue(provider.id)
        queue.write({"enabled": True, "max_concurrent_jobs": 3})
        thread = env["llm.thread"].create(
            {
                "name": f"Demo {time.strftime('%H:%M:%S')}",
                "provider_id": provider.id,
                "model_id": model.id,
            }
        )
        click.secho(
            f"Database: {registry.engine.url.render_as_string(hide_password=True)}", dim=True
        )
        click.secho(
            f"Provider '{provider.name}' -> {api_base} (simulated), queue limit 3", dim=True
        )
        return thread.id, provider.id


def _stream_one(registry, thread_id: int) -> None:
    prompt = "Why should LLM replies run as durable jobs?"
    click.secho(f"\nyou> {prompt}", bold=True)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        for update in thread.generate_response(prompt, use_queue=True):
            kind = update["type"]
            if kind == "job_status":
                click.secho(f"[job {update['job_id']}: {update['message']}]", fg="cyan")
            elif kind == "message_chunk":
                click.echo(update["content"], nl=False)
            elif kind == "done":
                click.secho("\n[done]", fg="green")
            elif kind == "error":
                click.secho(f"\n[error] {update['error']}", fg="red")


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
    click.secho(f"\nQueued {count} more jobs; the queue runs at most 3 at once.", bold=True)

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
