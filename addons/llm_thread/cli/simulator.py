"""``llmjobs simulator``: a loopback provider to point providers at instead of real ones."""

from __future__ import annotations

import click


@click.command("simulator")
@click.option(
    "--protocol",
    type=click.Choice(["openai", "anthropic", "ollama"]),
    default="openai",
    show_default=True,
    help="The provider API to speak.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--tokens", type=click.IntRange(min=0), default=20, show_default=True, help="Words per reply."
)
@click.option(
    "--token-delay",
    type=click.FloatRange(min=0),
    default=0.02,
    show_default=True,
    help="Seconds between chunks.",
)
@click.option(
    "--first-token-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds before the first chunk.",
)
@click.option("--api-key", default=None, help="Refuse requests without this key.")
def simulator(
    protocol: str,
    host: str,
    port: int,
    tokens: int,
    token_delay: float,
    first_token_delay: float,
    api_key: str | None,
) -> None:
    """Serve a simulated LLM provider until Ctrl-C.

    Replies are deterministic; inject faults with directives in the last user message,
    e.g. "[sim:status=429 retry_after=2]" or "[sim:cut_after=5]". Counters are at
    GET /_sim/stats.
    """
    from ..simulator import SimulatorServer

    server = SimulatorServer(
        protocol,
        tokens=tokens,
        token_delay=token_delay,
        first_token_delay=first_token_delay,
        api_key=api_key,
        port=port,
        host=host,
    )

    def announce(url: str) -> None:
        click.echo(
            f"Simulating the {protocol} API: set the provider's api_base to {url} (Ctrl-C to stop)"
        )

    # Ctrl-C ends serving as KeyboardInterrupt, raised again after uvicorn's graceful
    # shutdown; in a process started with SIGINT ignored (a background job of a shell
    # script) uvicorn still shuts down on it, and serving returns.
    try:
        server.serve_forever(on_ready=announce)
    except KeyboardInterrupt:
        pass
    except OSError as error:
        raise click.ClickException(f"Cannot listen on {host}:{port}: {error}") from error
    click.echo("Simulator stopped.")
