"""B-orders, the order list at scale: fill the core database with 1M orders (one INSERT ... SELECT
generate_series, with a committed hold per order on the shard), then time each list query the API runs
(by customer, by status, since an instant, a page deep down the list) and GET /v1/orders/{id}, one call
at a time. The baselines are measured on the same servers in the same run: a primary-key lookup of one
order in the core database for the list queries, and GET /v1/stock/{sku} (a point read through the
same API stack) for the order read.

    .venv/bin/python -m bench.order_list [--orders 1000000] [--reads 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import text

from bench.common import LoadResult, plot, write_result
from invsaga.api.app import create_app
from invsaga.api.auth import Scope, key_entry, new_key
from invsaga.api.deps import ApiDeps
from invsaga.dev.postgres import start_fleet
from invsaga.settings import load_settings
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.order_list import list_orders, list_orders_sql
from invsaga.store.page_cursor import encode_cursor
from invsaga.store.stock import StockStore

#: A page of 50 orders, at any depth and under any filter, answers within this at 1M orders.
LIST_P99_MS_MAX = 10.0
#: Reading one order (the core row and its holds on a shard) costs at most this many stock point reads.
ORDER_READ_RATIO_MAX = 3.0

START = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ["confirmed", "paid", "pending", "rejected", "cancelled"]
SKUS = 1000

# Customers have about 100 orders each; statuses are skewed as a shop's are (almost all confirmed).
_FILL_ORDERS = f"""
INSERT INTO orders (order_id, customer_id, status, amount, currency, lines, reason, created_at, updated_at)
SELECT 'ord-' || lpad(n::text, 8, '0'),
       'cust-' || (n % :customers),
       CASE n % 100 WHEN 0 THEN 'paid' WHEN 1 THEN 'pending' WHEN 2 THEN 'rejected'
                    WHEN 3 THEN 'cancelled' ELSE 'confirmed' END,
       12.50, 'USD',
       jsonb_build_array(
           jsonb_build_object('sku', 'BENCH-' || (n % {SKUS}), 'quantity', 1, 'location', 'main')
       ),
       NULL,
       timestamptz '2026-01-01 00:00:00+00' + n * interval '1 second',
       timestamptz '2026-01-01 00:00:00+00' + n * interval '1 second'
  FROM generate_series(1, :orders) AS n
"""

_FILL_HOLDS = f"""
INSERT INTO reservations (order_id, sku, location, quantity, state, expires_at)
SELECT 'ord-' || lpad(n::text, 8, '0'), 'BENCH-' || (n % {SKUS}), 'main', 1, 'committed',
       timestamptz '2026-01-01 00:15:00+00' + n * interval '1 second'
  FROM generate_series(1, :orders) AS n
"""

_FILL_STOCK = f"""
INSERT INTO stock_levels (sku, location, on_hand, reserved)
SELECT 'BENCH-' || n, 'main', 1000, 0 FROM generate_series(0, {SKUS - 1}) AS n
"""

_PK_LOOKUP = text(
    "SELECT order_id, customer_id, status, amount, currency, lines, reason, created_at, updated_at"
    " FROM orders WHERE order_id = :id"
)


async def _fill(databases: Databases, orders: int) -> dict[str, float]:
    started = time.perf_counter()
    params = {"orders": orders, "customers": max(1, orders // 100)}
    async with databases.core.begin() as conn:
        await conn.execute(text(_FILL_ORDERS), params)
    orders_seconds = time.perf_counter() - started
    async with databases.shards[0].begin() as conn:
        await conn.execute(text(_FILL_HOLDS), {"orders": orders})
        await conn.execute(text(_FILL_STOCK))
    async with databases.core_autocommit.connect() as conn:
        await conn.execute(text("VACUUM ANALYZE orders"))
    async with databases.shards_autocommit[0].connect() as conn:
        await conn.execute(text("VACUUM ANALYZE reservations"))
        await conn.execute(text("VACUUM ANALYZE stock_levels"))
    return {
        "orders_seconds": round(orders_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }


async def _timed(operation: Callable[[random.Random], Awaitable[object]], reads: int) -> LoadResult:
    rng = random.Random(11)
    for _ in range(min(100, reads)):  # warm the pools, the plan caches and the pages
        await operation(rng)
    result = LoadResult(callers=1, seconds=0.0)
    started = time.perf_counter()
    for _ in range(reads):
        began = time.perf_counter()
        await operation(rng)
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
    result.seconds = time.perf_counter() - started
    return result


def _plan_nodes(plan: dict[str, Any]) -> set[str]:
    """Each node of a plan, as its type and (for a scan of an index) the index's name."""
    name = plan["Node Type"] + (f" on {plan['Index Name']}" if "Index Name" in plan else "")
    return {name}.union(*(_plan_nodes(child) for child in plan.get("Plans", [])))


def _order_id(n: int) -> str:
    return f"ord-{n:08d}"


async def _measure(
    databases: Databases, orders: int, reads: int, client: httpx.AsyncClient
) -> dict[str, Any]:
    customers = max(1, orders // 100)

    def instant(rng: random.Random) -> datetime:
        return START + timedelta(seconds=rng.randint(1, orders))

    async def pk_lookup(rng: random.Random) -> None:
        async with databases.core_autocommit.connect() as conn:
            (await conn.execute(_PK_LOOKUP, {"id": _order_id(rng.randint(1, orders))})).one()

    async def by_customer(rng: random.Random) -> None:
        page = await list_orders(databases, customer_id=f"cust-{rng.randrange(customers)}")
        assert page.items

    async def by_status(rng: random.Random) -> None:
        await list_orders(
            databases, status=rng.choice(["confirmed", "paid", "pending", "rejected", "cancelled"])
        )

    async def since(rng: random.Random) -> None:
        await list_orders(databases, since=instant(rng))

    async def deep_page(rng: random.Random) -> None:
        # A page below 90% of the list: the cursor of an order among the oldest tenth.
        n = rng.randint(50, max(51, orders // 10))
        cursor = encode_cursor((START + timedelta(seconds=n)).isoformat(), _order_id(n))
        page = await list_orders(databases, cursor=cursor)
        assert len(page.items) == 50

    async def get_order(rng: random.Random) -> None:
        response = await client.get(f"/v1/orders/{_order_id(rng.randint(1, orders))}")
        assert response.status_code == 200 and response.json()["holds"], response.text

    async def get_stock(rng: random.Random) -> None:
        response = await client.get(f"/v1/stock/BENCH-{rng.randrange(SKUS)}")
        assert response.status_code == 200, response.text

    def plan_params(kind: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """The statement ``list_orders`` runs for ``kind`` and random values for it."""
        if kind == "list_by_customer":
            return list_orders_sql(customer_id="?"), {"customer_id": f"cust-{rng.randrange(customers)}"}
        if kind == "list_by_status":
            return list_orders_sql(status="?"), {"status": rng.choice(STATUSES)}
        if kind == "list_since":
            return list_orders_sql(since=True), {"since": instant(rng)}
        n = rng.randint(50, max(51, orders // 10))
        at = START + timedelta(seconds=n)
        return list_orders_sql(after=True), {"after_at": at, "after_id": _order_id(n)}

    async def executed(kind: str) -> dict[str, Any]:
        """Postgres' own execution time of the statement (EXPLAIN ANALYZE), without the client's share,
        which on a loaded machine is mostly waiting for a core."""
        rng = random.Random(13)
        times: list[float] = []
        nodes: set[str] = set()
        async with databases.core_autocommit.connect() as conn:
            for _ in range(min(reads, 500)):
                sql, params = plan_params(kind, rng)
                plan = (
                    await conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql), {**params, "limit": 51})
                ).scalar_one()
                times.append(float(plan[0]["Execution Time"]))
                nodes.update(_plan_nodes(plan[0]["Plan"]))
        ordered = sorted(times)
        return {
            "p50_ms": round(ordered[len(ordered) // 2], 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "plan_nodes": sorted(nodes),
        }

    timed = {}
    for name, operation in [
        ("baseline_pk_lookup", pk_lookup),
        ("list_by_customer", by_customer),
        ("list_by_status", by_status),
        ("list_since", since),
        ("list_deep_cursor", deep_page),
        ("baseline_get_stock_http", get_stock),
        ("get_order_http", get_order),
    ]:
        timed[name] = (await _timed(operation, reads)).summary()
        if name.startswith("list_"):
            timed[name]["postgres_execution"] = await executed(name)
    return timed


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    with start_fleet(1) as fleet:
        key = new_key()
        settings = load_settings(
            shard_dsns=",".join(fleet.shard_dsns),
            core_dsn=fleet.core_dsn,
            api_keys=key_entry(Scope.ADMIN, key),
        )
        await migrate_all(settings)
        databases = await Databases.open(settings)
        try:
            fill = await _fill(databases, args.orders)
            # The API in process, over ASGI: the route, its validation and serialization, no sockets.
            # Reading orders and stock needs no Temporal, so the app gets no checkout client.
            deps = ApiDeps(databases=databases, store=StockStore(databases), checkouts=cast(Any, None))
            transport = httpx.ASGITransport(app=create_app(settings, deps=deps))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers={"Authorization": f"Bearer {key}"}
            ) as client:
                timed = await _measure(databases, args.orders, args.reads, client)
        finally:
            await databases.close()
    lists = {k: v for k, v in timed.items() if k.startswith("list_")}
    # The machine is shared: the load during the run says how much of a p99 is other processes.
    load_1m, _, _ = os.getloadavg()
    baseline = timed["baseline_pk_lookup"]["p99_ms"]
    order_ratio = timed["get_order_http"]["p99_ms"] / timed["baseline_get_stock_http"]["p99_ms"]
    return {
        "benchmark": "B-orders order list",
        "orders": args.orders,
        "reads_per_query": args.reads,
        "page_size": 50,
        "fill": fill,
        "load_average_1m_at_end": round(load_1m, 2),
        "cpus": os.cpu_count(),
        "timings": timed,
        "p99_ratio_to_pk_lookup": {k: round(v["p99_ms"] / baseline, 2) for k, v in lists.items()},
        "get_order_p99_ratio_to_get_stock": round(order_ratio, 2),
        "targets": {
            "list_p99_ms_max": LIST_P99_MS_MAX,
            "order_read_ratio_max": ORDER_READ_RATIO_MAX,
            "met": all(v["p99_ms"] <= LIST_P99_MS_MAX for v in lists.values())
            and order_ratio <= ORDER_READ_RATIO_MAX,
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args(argv)
    payload = asyncio.run(_run(args))
    write_result("order_list", payload)
    names = list(payload["timings"])
    plot(
        "order_list",
        f"Order list at {args.orders:,} orders: latency per query (one caller)",
        {
            "p50 (ms)": (list(range(len(names))), [payload["timings"][n]["p50_ms"] for n in names]),
            "p99 (ms)": (list(range(len(names))), [payload["timings"][n]["p99_ms"] for n in names]),
        },
        "query: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)),
        "milliseconds",
    )
    return payload


if __name__ == "__main__":
    main()
