"""The peers of bench/load.py, run as worker processes of their own:

- ``python bench/peer.py procrastinate --concurrency N``: a procrastinate 3 worker whose
  ``generate`` task does what a generation job does, the plain way: stream the reply from
  the simulator with httpx (async, one shared client), then store it once; its ``noop`` task
  does nothing;
- ``python bench/peer.py floor``: the floor of any PostgreSQL queue: claim a row with
  ``FOR UPDATE SKIP LOCKED`` and mark it done, in two autocommitted statements, in a loop.

Both read the database from ``PEER_CONNINFO``; bench/load.py calls the other functions with
it. procrastinate comes from the project's ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx

REPLIES_TABLE = "CREATE TABLE IF NOT EXISTS bench_replies (id serial PRIMARY KEY, body text)"
FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS floor_jobs (id serial PRIMARY KEY, status text)"


def make_app(conninfo: str):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    client: dict[str, httpx.AsyncClient] = {}

    @app.task(name="generate", queue="llm")
    async def generate(url: str, prompt: str) -> None:
        if "client" not in client:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
            client["client"] = httpx.AsyncClient(timeout=60, limits=limits)
        body = {
            "model": "sim",
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
        parts = []
        async with client["client"].stream(
            "POST", f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer k"}
        ) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                for choice in json.loads(line[6:]).get("choices") or ():
                    parts.append((choice.get("delta") or {}).get("content") or "")
        await app.connector.execute_query_async(
            "INSERT INTO bench_replies (body) VALUES (%(body)s)", body="".join(parts)
        )

    @app.task(name="noop", queue="llm")
    async def noop() -> None:
        return None

    return app


def prepare_procrastinate(conninfo: str) -> None:
    """procrastinate's schema and the replies table, in the schema of ``conninfo``."""
    app = make_app(conninfo)
    with app.open():
        app.schema_manager.apply_schema()
        app.connector.get_sync_connector().execute_query(REPLIES_TABLE)


def defer(conninfo: str, task: str, jobs: list[dict]) -> None:
    app = make_app(conninfo)

    async def run() -> None:
        async with app.open_async():
            await app.tasks[task].batch_defer_async(*jobs)

    asyncio.run(run())


def finished(connection, statuses=("succeeded", "failed")) -> dict[str, int]:
    """How many jobs ended, per final status (``connection``: an autocommit psycopg one, kept
    open by the caller: a connection per look would cost PostgreSQL more than the peer)."""
    rows = connection.execute(
        "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status"
    ).fetchall()
    return {status: count for status, count in rows if status in statuses}


def prepare_floor(conninfo: str, jobs: int) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(FLOOR_TABLE)
        connection.execute("TRUNCATE floor_jobs")
        connection.execute(
            "INSERT INTO floor_jobs (status) SELECT 'todo' FROM generate_series(1, %s)", (jobs,)
        )


def run_floor(conninfo: str) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as connection:
        while True:
            row = connection.execute(
                "UPDATE floor_jobs SET status = 'doing' WHERE id = (SELECT id FROM floor_jobs "
                "WHERE status = 'todo' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id"
            ).fetchone()
            if row is None:
                return
            connection.execute("UPDATE floor_jobs SET status = 'done' WHERE id = %s", row)


if __name__ == "__main__":
    if sys.argv[1] == "procrastinate":
        concurrency = int(sys.argv[sys.argv.index("--concurrency") + 1])
        make_app(os.environ["PEER_CONNINFO"]).run_worker(
            queues=["llm"], concurrency=concurrency, wait=True
        )
    elif sys.argv[1] == "floor":
        run_floor(os.environ["PEER_CONNINFO"])
