"""Benchmark the bulk import end to end against the floor: a plain COPY of the same rows.

Generates a CSV (default 1,000,000 rows), starts shard servers plus core with fsync on, migrates, then
times, on the same servers: a plain COPY of the rows into unindexed tables (each shard its own slice,
split beforehand), the import into empty shards (parse + COPY + lock + upsert + ledger + commit), and a
re-import that changes every row. Prints one JSON object.

    .venv/bin/python bench/bulk_import.py [--rows N] [--shards N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import write_result
from invsaga.dev.postgres import start_fleet
from invsaga.settings import load_settings
from invsaga.store.audit import audit
from invsaga.store.bulk_import import import_stock
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.routing import ShardRouter

LOCATIONS = ("main", "east", "west", "north")
BASELINE_TABLE = "copy_baseline"


def write_stock_csv(path: Path, rows: int, *, bump: int = 0) -> None:
    """``rows`` rows: SKUs in order, each at every location, with random quantities plus ``bump``."""
    rng = random.Random(1)
    with path.open("w", encoding="utf-8") as out:
        out.write("sku,location,quantity\n")
        for n in range(rows):
            sku, location = f"BENCH-{n // len(LOCATIONS):08d}", LOCATIONS[n % len(LOCATIONS)]
            out.write(f"{sku},{location},{rng.randint(0, 5000) + bump}\n")


def split_by_shard(path: Path, router: ShardRouter, directory: Path) -> list[Path]:
    """The same rows as one headerless CSV per shard, so the baseline COPY does no routing work."""
    parts = [directory / f"shard{i}.csv" for i in range(router.shard_count)]
    outs = [part.open("w", encoding="utf-8") for part in parts]
    try:
        with path.open(encoding="utf-8") as source:
            next(source)
            for line in source:
                outs[router.shard_of(line.split(",", 1)[0])].write(line)
    finally:
        for out in outs:
            out.close()
    return parts


async def copy_baseline(dsns: list[str], parts: list[Path]) -> float:
    """Seconds for a concurrent plain COPY, one committed transaction per shard, into unindexed tables."""

    async def one(dsn: str, part: Path) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE TABLE {BASELINE_TABLE} (sku text, location text, quantity bigint)")
            async with conn.transaction():
                await conn.copy_to_table(BASELINE_TABLE, source=part, format="csv")
            await conn.execute(f"DROP TABLE {BASELINE_TABLE}")
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(dsn, part) for dsn, part in zip(dsns, parts, strict=True)))
    return time.perf_counter() - started


async def timed_import(databases: Databases, path: Path) -> dict[str, Any]:
    """Run one import, noting when the last row was staged so parse + COPY and apply show separately."""
    started = time.perf_counter()
    staged_at = started

    def on_progress(_rows: int) -> None:
        nonlocal staged_at
        staged_at = time.perf_counter()

    result = await import_stock(databases, path, on_progress=on_progress)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "rows_per_second": round(result.rows_read / seconds),
        "parse_and_copy_seconds": round(staged_at - started, 2),
        "lock_apply_commit_seconds": round(seconds - (staged_at - started), 2),
        "applied": result.applied,
        "unchanged": result.unchanged,
        "rejected": len(result.rejected),
    }


async def run_bench(rows: int, shards: int, workdir: Path) -> dict[str, Any]:
    csv_path, changed_path = workdir / "stock.csv", workdir / "stock-changed.csv"
    started = time.perf_counter()
    write_stock_csv(csv_path, rows)
    write_stock_csv(changed_path, rows, bump=1)
    generate_seconds = time.perf_counter() - started

    with start_fleet(shards, fsync=True) as fleet:
        settings = load_settings(shard_dsns=",".join(fleet.shard_dsns), core_dsn=fleet.core_dsn)
        await migrate_all(settings)
        databases = await Databases.open(settings)
        try:
            parts = split_by_shard(csv_path, databases.router, workdir)
            baseline_seconds = await copy_baseline(fleet.shard_dsns, parts)
            first = await timed_import(databases, csv_path)
            again = await timed_import(databases, changed_path)
            audit_started = time.perf_counter()
            report = await audit(databases)
            audit_seconds = time.perf_counter() - audit_started
        finally:
            await databases.close()

    return {
        "rows": rows,
        "shards": shards,
        "fsync": True,
        "csv_bytes": csv_path.stat().st_size,
        "seconds": first["seconds"],
        "rows_per_second": first["rows_per_second"],
        "import_into_empty_shards": first,
        "reimport_changing_every_row": again,
        "copy_baseline_seconds": round(baseline_seconds, 2),
        "copy_baseline_rows_per_second": round(rows / baseline_seconds),
        "import_to_copy_ratio": round(first["seconds"] / baseline_seconds, 1),
        "audit_seconds": round(audit_seconds, 2),
        "audit_clean": report.clean,
        "stock_rows": sum(s.stock_rows for s in report.shards),
        "generate_seconds": round(generate_seconds, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invsaga-bench-") as workdir:
        payload = asyncio.run(run_bench(args.rows, args.shards, Path(workdir)))
    write_result("bulk_import", {"benchmark": "bulk import", **payload})
    return payload


if __name__ == "__main__":
    main()
