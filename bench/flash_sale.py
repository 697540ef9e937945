"""B4, flash sale: 20,000 buyers through the HTTP API for 1,000 units of one SKU, some of whose
payments are declined, against the floor: 1,000 buyers for 1,000 units of another SKU, through the same
stack in the same run.

Reports the time to sell out, workflows started, rejections per second and their p99 latency, and
oversold and stranded units from the audit once every workflow has ended.

    .venv/bin/python -m bench.flash_sale [--buyers 20000] [--units 1000] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from bench.common import LoadResult, median, plot, write_result
from bench.http_load import Call, send_all
from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port, wait_for_port
from invsaga.dev.postgres import start_fleet
from invsaga.dev.temporal import start_dev_server
from invsaga.domain.checkout import CheckoutStatus
from invsaga.settings import Settings, load_settings
from invsaga.store.audit import audit
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured

FLASH, FLOOR = "FLASH-1", "FLOOR-1"


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "invsaga", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _seed(settings: Settings, units: int) -> None:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    try:
        await upsert_products(
            databases.core, [Product(sku=s, name=s, price=Decimal("19.99")) for s in (FLASH, FLOOR)]
        )
        store = StockStore(databases)
        for sku in (FLASH, FLOOR):
            await store.receive(sku, "main", units, idempotency_key=f"bench-flash-{sku}")
    finally:
        await databases.close()


def _buyer_call(key: str, sku: str, customer: str, token: str) -> Call:
    """One buyer's POST /v1/checkouts for one unit, with a fresh order id as its Idempotency-Key."""
    order_id = f"{sku.lower()}-{uuid.uuid4().hex[:14]}"
    body = {
        "order_id": order_id, "customer_id": customer, "payment_token": token,
        "lines": [{"sku": sku, "quantity": 1}],
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": order_id}
    return Call("POST", "/v1/checkouts", headers, body, tag=order_id)


async def _buyers(
    api: str, key: str, sku: str, count: int, connections: int, decline_share: float
) -> tuple[list[dict[str, Any]], float]:
    """``count`` buyers, ``connections`` at a time; returns one record per buyer and the seconds taken."""
    rng = random.Random(4)

    def calls() -> Iterator[Call]:
        for n in range(count):
            token = "tok_decline" if rng.random() < decline_share else "tok_success"
            yield _buyer_call(key, sku, f"buyer-{n}", token)

    answers, seconds = await send_all(api, calls(), connections=connections)
    records = [
        {
            "order_id": a.tag,
            "status": a.status,
            "ms": a.ms,
            "at": a.at,
            "fast_path": bool(a.body.get("fast_path")),
        }
        for a in answers
    ]
    return records, seconds


async def _resale_delays(
    api: str, key: str, store: StockStore, client: CheckoutClient, rounds: int
) -> tuple[list[float], int]:
    """Seconds from a receipt of one unit of the sold-out SKU until a buyer through the API holds it,
    ``rounds`` times; also how many buyers were refused (by the fast path) while waiting."""
    delays, refused = [], 0
    for n in range(rounds):
        await store.receive(FLASH, "main", 1, idempotency_key=f"bench-flash-restock-{n}")
        returned = time.perf_counter()
        while True:
            [answer], _ = await send_all(
                api, [_buyer_call(key, FLASH, f"restock-{n}", "tok_success")], connections=1
            )
            if answer.status == 202:
                delays.append(time.perf_counter() - returned)
                await client.result(answer.tag)  # settled before the audit
                break
            refused += 1
            if time.perf_counter() - returned > 10:
                raise RuntimeError("returned stock was not sold within 10 s")
    return delays, refused


async def _settled(
    store: StockStore, sku: str, started: float, accepted: list[str], client: CheckoutClient
) -> tuple[float, int, int]:
    """Seconds from ``started`` until every accepted checkout has ended; units confirmed and left."""
    results = await asyncio.gather(*(client.result(order_id) for order_id in accepted))
    seconds = time.perf_counter() - started
    [level] = await store.get(sku)
    return seconds, sum(r.status is CheckoutStatus.CONFIRMED for r in results), level.on_hand


def _answers(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many answers of each HTTP status."""
    statuses = sorted({r["status"] for r in records})
    return {str(s): sum(r["status"] == s for r in records) for s in statuses}


def _cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and its children (the API's uvicorn workers)."""
    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])


def _cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far: per named process tree, and the whole machine (Postgres backends come and go
    with pooled connections, so their share is in the machine's total, not listed apart)."""
    snapshot = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    times = psutil.cpu_times()
    snapshot["machine"] = float(sum(times) - times.idle - getattr(times, "iowait", 0.0))
    return snapshot


def _loadavg() -> str:
    """The machine's load averages (1, 5, 15 min): another session's tests share these 2 cores."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 1) for name in before}


async def _run(
    settings: Settings, api: str, key: str, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    temporal = await connect_configured(settings)
    client = CheckoutClient(temporal, task_queue=settings.task_queue)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    try:
        load_before = _loadavg()
        # The HTTP ceiling: the same load generator against the API's no-op health check.
        generator_cpu = time.process_time()
        api_cpu = _cpu_snapshot({"api": pids["api"]})
        noop, noop_seconds = await send_all(
            api, (Call("GET", "/healthz", {}) for _ in range(args.buyers)), connections=args.connections
        )
        noop_cpu = {
            "generator": round(time.process_time() - generator_cpu, 2),
            **_cpu_used(api_cpu, _cpu_snapshot({"api": pids["api"]})),
        }
        noop_rate = len(noop) / noop_seconds
        cpu_before = _cpu_snapshot(pids)
        floor_started = time.perf_counter()
        floor, _ = await _buyers(api, key, FLOOR, args.units, args.connections, 0.0)
        floor_accepted = [r["order_id"] for r in floor if r["status"] == 202]
        floor_seconds, _, _ = await _settled(store, FLOOR, floor_started, floor_accepted, client)
        floor_cpu = _cpu_used(cpu_before, _cpu_snapshot(pids))

        cpu_before = _cpu_snapshot(pids)
        flash_started = time.perf_counter()
        flash, send_seconds = await _buyers(
            api, key, FLASH, args.buyers, args.connections, args.decline_share
        )
        accepted = [r["order_id"] for r in flash if r["status"] == 202]
        flash_seconds, confirmed, unsold = await _settled(store, FLASH, flash_started, accepted, client)
        cpu = _cpu_used(cpu_before, _cpu_snapshot(pids))
        # Once sold out: how fast late buyers are turned away, nothing else going on.
        generator_cpu = time.process_time()
        api_cpu = _cpu_snapshot({"api": pids["api"]})
        late, late_seconds = await _buyers(api, key, FLASH, args.buyers // 4, args.connections, 0.0)
        late_cpu = {
            "generator": round(time.process_time() - generator_cpu, 2),
            **_cpu_used(api_cpu, _cpu_snapshot({"api": pids["api"]})),
        }
        # The ceiling again, right after: neighbours on a shared machine move both rates together.
        noop_late, noop_late_seconds = await send_all(
            api, (Call("GET", "/healthz", {}) for _ in range(len(late))), connections=args.connections
        )
        noop_late_rate = len(noop_late) / noop_late_seconds
        # Stock that comes back: how soon is it sellable again through the API?
        resale, resale_refused = await _resale_delays(api, key, store, client, rounds=args.resales)
        workflows = (await temporal.count_workflows(f"CheckoutSkus = '{FLASH}'")).count
        report = await audit(databases)
    finally:
        await databases.close()

    rejections = [r for r in flash if r["status"] == 409]
    fast = [r for r in rejections if r["fast_path"]]
    late_fast = [r for r in late if r["status"] == 409 and r["fast_path"]]
    late_load = LoadResult(
        callers=args.connections, seconds=late_seconds, latencies_ms=[r["ms"] for r in late]
    )
    rejected_load = LoadResult(
        callers=args.connections, seconds=0.0, latencies_ms=[r["ms"] for r in rejections]
    )
    span = (
        (max(r["at"] for r in rejections) - min(r["at"] for r in rejections)) if len(rejections) > 1 else 0.0
    )
    oversold = max(0, confirmed - args.units) + sum(
        v.numbers.get("reserved", 0) - v.numbers.get("on_hand", 0)
        for v in report.violations
        if v.invariant == 1
    )
    stranded = sum(s.units_reserved for s in report.shards)
    rate = len(rejections) / span if span else 0.0
    payload = {
        "benchmark": "B4 flash sale",
        "buyers": args.buyers,
        "units": args.units,
        "connections": args.connections,
        "decline_share": args.decline_share,
        "answers": _answers(flash),
        "floor_checkouts": args.units,
        "floor_seconds": round(floor_seconds, 2),
        "sell_out_seconds": round(flash_seconds, 2),
        "units_confirmed": confirmed,
        "units_left_unsold": unsold,
        "sell_out_to_floor_ratio": round(flash_seconds / floor_seconds, 2),
        "seconds_to_answer_every_buyer": round(send_seconds, 2),
        "workflows_started": workflows,
        "buyers_answered_without_a_workflow": len(fast) + len(late_fast),
        "workflows_expected": args.buyers + len(late) - len(fast) - len(late_fast) + len(resale),
        "cpu_seconds_during_floor": floor_cpu,
        "cpu_seconds_during_sale": cpu,
        "rejections": len(rejections),
        "rejections_per_second": round(rate, 1),
        "api_processes": args.api_workers,
        "noop_requests_per_second": round(noop_rate, 1),
        "rejections_to_noop_ratio": round(rate / noop_rate, 2),
        "rejection_p50_ms": round(rejected_load.percentile(50), 2),
        "rejection_p99_ms": round(rejected_load.percentile(99), 2),
        "returned_stock_sellable_again": {
            "rounds": len(resale),
            "buyers_refused_meanwhile": resale_refused,
            "p50_ms": round(median(resale) * 1000, 2),
            "max_ms": round(max(resale) * 1000, 2),
        },
        "after_sell_out": {
            "buyers": len(late),
            "answers": {
                str(s): sum(r["status"] == s for r in late) for s in sorted({r["status"] for r in late})
            },
            "fast_path": len(late_fast),
            "rejections_per_second": round(len(late) / late_seconds, 1),
            "rejections_to_noop_ratio": round(len(late) / late_seconds / noop_rate, 2),
            "noop_requests_per_second_right_after": round(noop_late_rate, 1),
            "rejections_to_noop_right_after_ratio": round(len(late) / late_seconds / noop_late_rate, 2),
            "p50_ms": round(late_load.percentile(50), 2),
            "p99_ms": round(late_load.percentile(99), 2),
        },
        # CPU seconds of the load generator (this process) and of the API, per phase, and per request:
        # the generator must not be the bottleneck of either rate.
        "cpu_seconds_during_noop": noop_cpu,
        "cpu_seconds_after_sell_out": late_cpu,
        "api_cpu_ms_per_request": {
            "noop": round(noop_cpu["api"] * 1000 / len(noop), 3),
            "after_sell_out": round(late_cpu["api"] * 1000 / len(late), 3),
        },
        "generator_cpu_ms_per_request": {
            "noop": round(noop_cpu["generator"] * 1000 / len(noop), 3),
            "after_sell_out": round(late_cpu["generator"] * 1000 / len(late), 3),
        },
        "loadavg_before_and_after": [load_before, _loadavg()],
        "oversold_units": oversold,
        "stranded_units": stranded,
        "audit_clean": report.clean,
    }
    payload["targets"] = {
        "oversold": 0, "stranded": 0, "rejections_per_second_min": 5000,
        "no_workflow_for_fast_path_rejections": workflows == payload["workflows_expected"],
        "sell_out_to_floor_max": 1.2,
        "met": (
            oversold == 0 and stranded == 0 and rate >= 5000 and workflows == payload["workflows_expected"]
            and flash_seconds / floor_seconds <= 1.2
        ),
    }  # fmt: skip
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buyers", type=int, default=20_000)
    parser.add_argument("--units", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--api-workers", type=int, default=2, help="API processes (uvicorn workers)")
    parser.add_argument("--resales", type=int, default=20, help="units returned one by one once sold out")
    parser.add_argument("--decline-share", type=float, default=0.05)
    args = parser.parse_args(argv)

    from invsaga.api.auth import generate_dev_keys

    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="invsaga-b4-") as scratch:
        fleet = start_fleet(2, fsync=True)
        temporal = start_dev_server(db_file=Path(scratch) / "temporal.sqlite", ui=False)
        try:
            assert fleet.core is not None
            keys = generate_dev_keys(Path(scratch))
            payments_port, api_port = free_port(), free_port()
            env = {
                "INVSAGA_SHARD_DSNS": ",".join(fleet.shard_dsns),
                "INVSAGA_CORE_DSN": fleet.core_dsn,
                "INVSAGA_PAYMENT_DSN": fleet.core.create_database("payments"),
                "INVSAGA_PAYMENT_URL": f"http://127.0.0.1:{payments_port}",
                "INVSAGA_TEMPORAL_ADDRESS": temporal.address,
                "INVSAGA_API_PORT": str(api_port),
                "INVSAGA_API_KEYS": keys.setting,
                "INVSAGA_POOL_SIZE": "20",
                "INVSAGA_API_WORKERS": str(args.api_workers),
            }
            settings = load_settings(**{k.removeprefix("INVSAGA_").lower(): v for k, v in env.items()})
            asyncio.run(_seed(settings, args.units))
            children.append(_spawn(["payments", "serve", "--port", str(payments_port)], env))
            children.append(_spawn(["worker"], env))
            children.append(_spawn(["api"], env))
            wait_for_port(payments_port)
            wait_for_port(api_port, timeout=60)
            key = next(k for scope, k in keys.keys.items() if scope.value == "checkout")
            pids = {"api": children[2].pid, "worker": children[1].pid, "temporal": temporal.process.pid}
            payload = asyncio.run(_run(settings, f"http://127.0.0.1:{api_port}", key, args, pids))
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(timeout=60)
            temporal.stop()
            fleet.stop()
    write_result("b4_flash_sale", payload)
    plot(
        "b4_flash_sale",
        f"B4: {args.buyers:,} buyers for {args.units:,} units through the HTTP API",
        {
            "seconds to sell out": ([1], [payload["sell_out_seconds"]]),
            f"floor: {args.units:,} checkouts alone": ([1], [payload["floor_seconds"]]),
        },
        "",
        "seconds",
    )
    return payload


if __name__ == "__main__":
    main()
