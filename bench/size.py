"""B5, size: import 10M SKUs into 8 shards through the real bulk import, then point-read random SKUs
through the store and report p50/p99; pgbench's point SELECT on one shard is the read baseline.

    .venv/bin/python -m bench.size [--skus 10000000] [--shards 8] [--reads 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bulk_import import timed_import
from bench.common import LoadResult, pgbench, plot, write_result
from invsaga.dev.postgres import start_fleet
from invsaga.settings import load_settings
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore

POINT_SELECT = """
\\set n random(0, {top})
SELECT * FROM stock_levels WHERE sku = 'SIZE-' || lpad(:n::text, 9, '0');
"""
MINUTES_MAX = 5.0
P99_MS_MAX = 2.0


def write_skus(path: Path, skus: int) -> None:
    rng = random.Random(5)
    with path.open("w", encoding="utf-8") as out:
        out.write("sku,location,quantity\n")
        out.writelines(f"SIZE-{n:09d},main,{rng.randint(0, 5000)}\n" for n in range(skus))


async def _point_reads(store: StockStore, skus: int, reads: int) -> LoadResult:
    rng = random.Random(7)
    result = LoadResult(callers=1, seconds=0.0)
    for _ in range(200):  # warm the pools and the plan caches
        await store.get(f"SIZE-{rng.randrange(skus):09d}")
    started = time.perf_counter()
    for _ in range(reads):
        sku = f"SIZE-{rng.randrange(skus):09d}"
        began = time.perf_counter()
        await store.get(sku)
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
    result.seconds = time.perf_counter() - started
    return result


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    csv_path = workdir / "skus.csv"
    write_skus(csv_path, args.skus)
    with start_fleet(args.shards, fsync=True) as fleet:
        settings = load_settings(shard_dsns=",".join(fleet.shard_dsns), core_dsn=fleet.core_dsn)
        await migrate_all(settings)
        databases = await Databases.open(settings)
        try:
            imported = await timed_import(databases, csv_path)
            reads = await _point_reads(StockStore(databases), args.skus, args.reads)
        finally:
            await databases.close()
        # Index lookups of random SKUs on one shard: about 1 in N exists there, as for a misrouted read.
        baseline = pgbench(
            fleet.shards[0], "inventory", POINT_SELECT.format(top=args.skus - 1), clients=1, seconds=5
        )
    summary = reads.summary()
    return {
        "benchmark": "B5 size",
        "skus": args.skus,
        "shards": args.shards,
        "import": imported,
        "import_minutes": round(imported["seconds"] / 60, 2),
        "point_read": summary,
        "pgbench_point_select_1_client": baseline,
        "targets": {
            "import_minutes_max": MINUTES_MAX,
            "p99_ms_max": P99_MS_MAX,
            "met": imported["seconds"] / 60 <= MINUTES_MAX and summary["p99_ms"] <= P99_MS_MAX,
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skus", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--reads", type=int, default=5000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invsaga-b5-") as workdir:
        payload = asyncio.run(_run(args, Path(workdir)))
    write_result("b5_size", payload)
    read = payload["point_read"]
    plot(
        "b5_size",
        f"B5: point-read latency after importing {args.skus:,} SKUs into {args.shards} shards",
        {"store.get (ms)": ([50, 99], [read["p50_ms"], read["p99_ms"]])},
        "percentile",
        "milliseconds",
    )
    return payload


if __name__ == "__main__":
    main()
