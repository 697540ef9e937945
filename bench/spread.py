"""B2, spread: reservations per second over 100k SKUs at 64 callers through our reserve path, against
pgbench calling the same ``reserve_stock`` SQL (one reservation per transaction) on the same server in
the same run.

    .venv/bin/python -m bench.spread [--skus 100000] [--callers 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

from sqlalchemy import text

from bench.common import closed_loop, pgbench, plot, write_result
from invsaga.dev.postgres import start_fleet
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.settings import Settings, load_settings
from invsaga.store.batching import ReservationBatcher
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore

SEED = """
INSERT INTO stock_levels (sku, location, on_hand)
SELECT 'SPREAD-' || g, 'main', 1000000 FROM generate_series(1, :n) g;
INSERT INTO stock_movements (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
SELECT 'SPREAD-' || g, 'main', 1000000, 0, 'receive', 'bench', 'receive:bench-spread-' || g
  FROM generate_series(1, :n) g;
"""

PGBENCH = """
\\set n random(1, {skus})
SELECT * FROM reserve_stock(ARRAY[gen_random_uuid()::text], '{{900}}', '{{1}}',
                            ARRAY['SPREAD-' || :n], '{{main}}', '{{1}}');
"""


async def _seed(settings: Settings, skus: int) -> None:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    try:
        async with databases.shards[0].begin() as conn:
            for statement in SEED.strip().split(";\n"):
                await conn.execute(text(statement), {"n": skus})
    finally:
        await databases.close()


async def _ours(settings: Settings, skus: int, callers: int, seconds: float) -> dict[str, Any]:
    databases = await Databases.open(settings)
    store = StockStore(databases)
    batcher = ReservationBatcher(store)
    rng = random.Random(2)

    async def reserve(caller: int, n: int) -> None:
        sku = f"SPREAD-{rng.randint(1, skus)}"
        request = ReserveRequest(order_id=f"b2-{caller}-{n}", lines=[StockLine(sku=sku, quantity=1)])
        outcome = await batcher.reserve(0, request)
        if not outcome.held:
            raise RuntimeError("unexpected shortage")

    try:
        load = await closed_loop(reserve, callers=callers, seconds=seconds)
        await batcher.aclose()
    finally:
        await databases.close()
    return load.summary()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    fleet = start_fleet(1, fsync=True)
    try:
        # One shard: every SKU routes to it, so both sides work on the same rows of one server.
        settings = load_settings(shard_dsns=fleet.shard_dsns[0], core_dsn=fleet.core_dsn, pool_size=20)
        asyncio.run(_seed(settings, args.skus))
        ours = asyncio.run(_ours(settings, args.skus, args.callers, args.seconds))
        base = pgbench(
            fleet.shards[0], "inventory", PGBENCH.format(skus=args.skus),
            clients=args.callers, seconds=max(1, int(args.seconds)),
        )  # fmt: skip
    finally:
        fleet.stop()
    ratio = round(ours["per_second"] / base["tps"], 2)
    payload = {
        "benchmark": "B2 spread",
        "skus": args.skus,
        "ours": ours,
        "pgbench": base,
        "ratio": ratio,
        "target_ratio_min": 0.8,
        "met": ratio >= 0.8,
    }
    write_result("b2_spread", payload)
    plot(
        "b2_spread",
        f"B2: reservations/s over {args.skus:,} SKUs, {args.callers} callers (fsync on)",
        {
            "inventory-saga reserve (batched)": ([args.callers], [ours["per_second"]]),
            "pgbench, same reserve_stock SQL": ([args.callers], [base["tps"]]),
        },
        "concurrent callers",
        "reservations per second",
    )
    return payload


if __name__ == "__main__":
    main()
