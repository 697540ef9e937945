"""B1, hot row: reservations per second on ONE SKU through our reserve path, against pgbench running
the equivalent single-row conditional UPDATE on the same server in the same run.

Our path does strictly more per reservation than the baseline (a hold row and a ledger row besides the
stock update), and batches concurrent callers into group commits.

    .venv/bin/python -m bench.hot_row [--seconds 10] [--callers 8,64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
from typing import Any

from sqlalchemy import text

from bench.common import closed_loop, pgbench, plot, write_result
from invsaga.dev.postgres import start_fleet
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.settings import load_settings
from invsaga.store.batching import ReservationBatcher
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore

HOT_SKU = "HOT-1"
BASELINE = """
UPDATE stock_levels SET reserved = reserved + 1, version = version + 1, updated_at = now()
 WHERE sku = 'PGBENCH-HOT' AND location = 'main' AND on_hand - reserved >= 1;
"""


async def _our_path(
    settings: Any, callers: list[int], seconds: float, in_flight: int
) -> list[dict[str, Any]]:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    shard = databases.router.shard_of(HOT_SKU)
    await store.receive(HOT_SKU, "main", 1_000_000_000, idempotency_key="bench-hot")
    async with databases.shards[shard].begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO stock_levels (sku, location, on_hand) VALUES ('PGBENCH-HOT', 'main', 1000000000)"
            )
        )
    results = []
    try:
        for count in callers:
            batcher = ReservationBatcher(store, max_in_flight=in_flight)

            async def reserve(
                caller: int, n: int, count: int = count, batcher: ReservationBatcher = batcher
            ) -> None:
                request = ReserveRequest(
                    order_id=f"b1-{count}-{caller}-{n}", lines=[StockLine(sku=HOT_SKU, quantity=1)]
                )
                outcome = await batcher.reserve(shard, request)
                if not outcome.held:
                    raise RuntimeError("unexpected shortage")

            load = await closed_loop(reserve, callers=count, seconds=seconds)
            await batcher.aclose()
            results.append(load.summary())
    finally:
        await databases.close()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", default="8,64,256")
    parser.add_argument("--in-flight", type=int, default=2, help="batches in flight per shard")
    args = parser.parse_args(argv)
    callers = [int(c) for c in args.callers.split(",")]

    fleet = start_fleet(1, fsync=True)
    try:
        settings = load_settings(shard_dsns=fleet.shard_dsns[0], core_dsn=fleet.core_dsn, pool_size=20)
        ours = asyncio.run(_our_path(settings, callers, args.seconds, args.in_flight))
        baseline = [
            pgbench(fleet.shards[0], "inventory", BASELINE, clients=c, seconds=max(1, int(args.seconds)))
            for c in callers
        ]
        # One caller, one durable commit at a time: the least a caller can wait for its answer.
        single = pgbench(fleet.shards[0], "inventory", BASELINE, clients=1, seconds=max(1, int(args.seconds)))
    finally:
        fleet.stop()

    commit_ms = single["latency_avg_ms"]
    rows = []
    for mine, base in zip(ours, baseline, strict=True):
        rows.append({
            **mine, "pgbench_tps": base["tps"], "ratio": round(mine["per_second"] / base["tps"], 2),
            # Closed loop: N callers each waiting at least one commit cannot exceed N / commit latency.
            "ceiling_per_second": round(mine["callers"] / commit_ms * 1000),
            "target_per_second": round(10 * base["tps"]),
        })  # fmt: skip
    low, high = rows[0], rows[-1]
    payload = {
        "benchmark": "B1 hot row",
        "machine": {"cpus": 2, "python": platform.python_version(), "fsync": True},
        "seconds_per_point": args.seconds,
        "batches_in_flight": args.in_flight,
        "one_durable_commit_ms": commit_ms,
        "points": rows,
        "targets": {
            "ratio_vs_pgbench_min": 10.0,
            "ratio_vs_pgbench_measured_min": min(r["ratio"] for r in rows),
            "p99_growth_max": 2.0,
            "p99_growth_measured": round(high["p99_ms"] / low["p99_ms"], 2),
        },
    }
    payload["targets"]["met"] = (
        payload["targets"]["ratio_vs_pgbench_measured_min"] >= 10.0
        and payload["targets"]["p99_growth_measured"] <= 2.0
    )
    write_result("b1_hot_row", payload)
    plot(
        "b1_hot_row",
        "B1: reservations/s on one SKU (fsync on)",
        {
            "inventory-saga reserve (batched)": (
                [r["callers"] for r in rows],
                [r["per_second"] for r in rows],
            ),
            "pgbench conditional UPDATE": ([r["callers"] for r in rows], [r["pgbench_tps"] for r in rows]),
        },
        "concurrent callers",
        "operations per second",
        logx=True,
    )
    return payload


if __name__ == "__main__":
    main()
