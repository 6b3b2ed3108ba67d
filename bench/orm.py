"""Recordsets against raw SQLAlchemy Core: create, search, read and write of 10,000 records.

Both sides do the same work on the same table in the same database, interleaved and
repeated: they insert the same rows (the ORM's audit columns create/write date and user
included), select the same ids, read the same columns and update the same rows. The script
prints the median time of each and the ratio (recordsets / Core). Target: within 2x.

    .venv/bin/python bench/orm.py                       # SQLite, plus PostgreSQL when
    LLMJOBS_TEST_PG_URL=postgresql://... bench/orm.py   # that variable names a server
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: bench/queue.py would shadow the stdlib's queue

from core import Environment, Registry  # noqa: E402
from core.testing import postgres_base_url, postgres_schema_url  # noqa: E402


def rows(count: int) -> list[dict]:
    return [{"name": f"partner {i}", "age": i % 90, "score": i / 7} for i in range(count)]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_orm(registry: Registry, count: int) -> dict[str, float]:
    results = {}
    cr = registry.cursor()
    env = Environment(cr)
    model = env["bench.record"]
    results["create"] = timed(lambda: model.create(rows(count)))
    cr.commit()
    found = None

    def search():
        nonlocal found
        found = model.search([("age", ">=", 0)])

    results["search"] = timed(search)
    cr.commit()
    results["read"] = timed(lambda: found.read(["name", "age"]))
    cr.commit()
    results["write"] = timed(lambda: found.write({"score": 1.0}))
    cr.commit()
    found.unlink()
    cr.commit()
    cr.close()
    return results


def run_core(registry: Registry, count: int) -> dict[str, float]:
    table = registry["bench.record"]._table_obj
    results = {}
    with registry.engine.connect() as conn:
        now = dt.datetime.now(dt.UTC)
        audit = {"create_date": now, "write_date": now, "create_uid": 1, "write_uid": 1}
        data = [{**row, **audit} for row in rows(count)]
        results["create"] = timed(
            lambda: conn.execute(sa.insert(table).returning(table.c.id), data).all()
        )
        conn.commit()
        ids: list[int] = []

        def search():
            ids[:] = (
                conn.execute(
                    sa.select(table.c.id).where(table.c.age >= 0).order_by(table.c.name, table.c.id)
                )
                .scalars()
                .all()
            )

        results["search"] = timed(search)
        conn.commit()
        results["read"] = timed(
            lambda: conn.execute(
                sa.select(table.c.id, table.c.name, table.c.age).where(table.c.id.in_(ids))
            ).all()
        )
        conn.commit()
        results["write"] = timed(
            lambda: conn.execute(sa.update(table).where(table.c.id.in_(ids)).values(score=1.0))
        )
        conn.commit()
        conn.execute(sa.delete(table))
        conn.commit()
    return results


def bench(url: str, count: int, repeat: int) -> None:
    registry = Registry(url, addons_path=[ROOT / "bench" / "addons"], addons=["bench_orm"])
    orm_runs, core_runs = [], []
    for _ in range(repeat):  # interleaved, so both sides see the same machine noise
        core_runs.append(run_core(registry, count))
        orm_runs.append(run_orm(registry, count))
    registry.close()
    print(f"\n{registry.dialect}: {count} records, median of {repeat} runs")
    print(f"{'operation':<10}{'recordsets':>12}{'Core':>10}{'ratio':>8}")
    for operation in ("create", "search", "read", "write"):
        orm = statistics.median(r[operation] for r in orm_runs)
        core = statistics.median(r[operation] for r in core_runs)
        print(f"{operation:<10}{orm * 1000:>10.1f}ms{core * 1000:>8.1f}ms{orm / core:>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bench(f"sqlite:///{folder / 'bench.db'}", args.records, args.repeat)
        base = postgres_base_url()
        if base:
            bench(stack.enter_context(postgres_schema_url(base)), args.records, args.repeat)
        else:
            print("\nPostgreSQL skipped: set LLMJOBS_TEST_PG_URL to include it.")


if __name__ == "__main__":
    main()
