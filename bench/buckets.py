"""Would hot-SKU buckets pay on top of group commit? An upper bound, measured.

Buckets split one SKU's stock into K rows so that concurrent writers stop queueing on one row lock.
Their best case is K rows that never need to borrow from each other, each with its own batch queue, so
K transactions run side by side. This benchmark measures exactly that best case: callers spread over K
independent rows of one shard, one ``ReservationBatcher`` per row, against K = 1, each K on a fresh
cluster. Real buckets could only do worse (borrowing, and reads and audits summing K rows), so if the
best case does not clearly beat one row, buckets do not pay here.

    .venv/bin/python -m bench.buckets [--rows 1,2,4] [--callers 64,256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench.common import closed_loop, plot, write_result
from invsaga.dev.postgres import start_fleet
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.settings import load_settings
from invsaga.store.batching import ReservationBatcher
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore


async def _measure(settings: Any, rows: int, callers: list[int], seconds: float) -> list[dict[str, Any]]:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    skus = [f"BUCKET-{i}" for i in range(rows)]
    for sku in skus:
        await store.receive(sku, "main", 1_000_000_000, idempotency_key=f"bench-{sku}")
    shard = 0  # the fleet has one shard
    points = []
    try:
        for count in callers:
            batchers = [ReservationBatcher(store) for _ in skus]

            async def reserve(
                caller: int, n: int, count: int = count, batchers: list[ReservationBatcher] = batchers
            ) -> None:
                row = caller % len(skus)
                request = ReserveRequest(
                    order_id=f"k{count}-{caller}-{n}", lines=[StockLine(sku=skus[row], quantity=1)]
                )
                if not (await batchers[row].reserve(shard, request)).held:
                    raise RuntimeError("unexpected shortage")

            load = await closed_loop(reserve, callers=count, seconds=seconds)
            for batcher in batchers:
                await batcher.aclose()
            points.append({"rows": len(skus), **load.summary()})
    finally:
        await databases.close()
    return points


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1,2,4", help="independent rows to spread one SKU's load over")
    parser.add_argument("--callers", default="64,256")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    callers = [int(c) for c in args.callers.split(",")]

    points: list[dict[str, Any]] = []
    for rows in [int(r) for r in args.rows.split(",")]:
        fleet = start_fleet(1, fsync=True)
        try:
            settings = load_settings(shard_dsns=fleet.shard_dsns[0], core_dsn=fleet.core_dsn, pool_size=20)
            points += asyncio.run(_measure(settings, rows, callers, args.seconds))
        finally:
            fleet.stop()
    one_row = {p["callers"]: p["per_second"] for p in points if p["rows"] == 1}
    for point in points:
        base = one_row.get(point["callers"])
        point["ratio_vs_one_row"] = round(point["per_second"] / base, 2) if base else None
    gains = [p["ratio_vs_one_row"] for p in points if p["rows"] > 1 and p["ratio_vs_one_row"]]
    payload = {
        "benchmark": "hot-SKU buckets, best case: K independent rows with a batch queue each",
        "seconds_per_point": args.seconds,
        "points": points,
        "best_gain_over_one_row": max(gains) if gains else None,
        "worst_gain_over_one_row": min(gains) if gains else None,
    }
    write_result("buckets_upper_bound", payload)
    plot(
        "buckets_upper_bound",
        "Buckets, best case: reservations/s over K rows of one SKU",
        {
            f"{c} callers": (
                [p["rows"] for p in points if p["callers"] == c],
                [p["per_second"] for p in points if p["callers"] == c],
            )
            for c in callers
        },
        "rows (K buckets)",
        "reservations per second",
    )
    return payload


if __name__ == "__main__":
    main()
