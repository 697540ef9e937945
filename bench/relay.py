"""Stock events under B2-like load: the relay's throughput (events/s) and end-to-end lag (from the
change's transaction to the webhook receiver), and the outbox's cost to reserve throughput, as the ratio
of reservations/s with the outbox trigger on to the same load with it off (rounds interleaved).

    .venv/bin/python -m bench.relay [--skus 100000] [--callers 64] [--seconds 10] [--rounds 2]

The load is bench.spread's (batched reserves of one unit over many SKUs, one shard, fsync on). The
relay is a real `invsaga relay` process; the receiver answers 204 on a thread of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import closed_loop, median, write_result
from bench.spread import _seed
from invsaga.dev.asgi_thread import ThreadedAsgiServer
from invsaga.dev.postgres import start_fleet
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.events.webhooks import register_webhook
from invsaga.settings import Settings, load_settings
from invsaga.store.batching import ReservationBatcher
from invsaga.store.databases import Databases
from invsaga.store.stock import StockStore

ROOT = Path(__file__).resolve().parents[1]
_TRIGGER = "stock_events_after_movements"


class Receiver:
    """Counts deliveries and how long after its change each arrived."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self.first: float | None = None
        self.last: float | None = None
        self._lock = threading.Lock()

    async def hook(self, request: Request) -> Response:
        import json

        event = json.loads(await request.body())
        now = time.time()
        occurred = datetime.fromisoformat(event["occurred_at"]).timestamp()
        with self._lock:
            self.lags_ms.append((now - occurred) * 1000)
            self.first = self.first or now
            self.last = now
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


async def _load(settings: Settings, skus: int, callers: int, seconds: float, tag: str) -> dict[str, Any]:
    databases = await Databases.open(settings)
    store = StockStore(databases)
    batcher = ReservationBatcher(store)
    rng = random.Random(tag)

    async def reserve(caller: int, n: int) -> None:
        sku = f"SPREAD-{rng.randint(1, skus)}"
        request = ReserveRequest(order_id=f"ev-{tag}-{caller}-{n}", lines=[StockLine(sku=sku, quantity=1)])
        if not (await batcher.reserve(0, request)).held:
            raise RuntimeError("unexpected shortage")

    try:
        load = await closed_loop(reserve, callers=callers, seconds=seconds)
        await batcher.aclose()
    finally:
        await databases.close()
    return load.summary()


async def _sql(settings: Settings, statement: str) -> Any:
    databases = await Databases.open(settings)
    try:
        async with databases.shards[0].begin() as conn:
            result = await conn.execute(text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        await databases.close()


async def _register(settings: Settings, url: str) -> None:
    databases = await Databases.open(settings)
    try:
        await register_webhook(databases.core, url=url, event_types=["stock.changed", "stock.sold_out"])
    finally:
        await databases.close()


def _relay(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    env |= {
        "INVSAGA_SHARD_DSNS": ",".join(settings.shard_dsns),
        "INVSAGA_CORE_DSN": settings.core_dsn,
        "INVSAGA_DATA_DIR": "/nonexistent",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "invsaga", "relay"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    fleet = start_fleet(1, fsync=True)
    try:
        settings = load_settings(shard_dsns=fleet.shard_dsns[0], core_dsn=fleet.core_dsn, pool_size=20)
        asyncio.run(_seed(settings, args.skus))
        asyncio.run(_sql(settings, "TRUNCATE stock_events"))  # the seed's receipts are not the load

        # 1. The outbox's cost: the same load with the trigger off and on, interleaved.
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for round_ in range(args.rounds):
            for state in ("off", "on"):
                verb = "DISABLE" if state == "off" else "ENABLE"
                asyncio.run(_sql(settings, f"ALTER TABLE stock_movements {verb} TRIGGER {_TRIGGER}"))
                summary = asyncio.run(
                    _load(settings, args.skus, args.callers, args.seconds, f"{state}{round_}")
                )
                rates[state].append(summary["per_second"])
        ratio = round(median(rates["on"]) / median(rates["off"]), 3)

        # 2. The relay under the same load: delivered events/s and lag from change to receiver.
        backlog = int(asyncio.run(_sql(settings, "SELECT count(*) FROM stock_events")))
        receiver = Receiver()
        with ThreadedAsgiServer(receiver.app(), name="bench receiver") as server:
            asyncio.run(_register(settings, f"{server.url}/hook"))
            relay = _relay(settings)
            try:
                time.sleep(3)  # the relay starts and stamps the earlier rounds' rows (not delivered)
                loaded = asyncio.run(_load(settings, args.skus, args.callers, args.seconds, "relay"))
                expected = loaded["ops"]  # one stock.changed per reservation's statement and row, at most
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    before = len(receiver.lags_ms)
                    time.sleep(1.0)
                    if len(receiver.lags_ms) == before:
                        break
            finally:
                relay.send_signal(signal.SIGTERM)
                relay.wait(30)
    finally:
        fleet.stop()
    lags = sorted(receiver.lags_ms)
    delivered = len(lags)
    span = (receiver.last or 0) - (receiver.first or 0)
    payload = {
        "benchmark": "events: relay throughput and lag, outbox cost",
        "skus": args.skus,
        "callers": args.callers,
        "seconds": args.seconds,
        "reserves_per_second_outbox_off": rates["off"],
        "reserves_per_second_outbox_on": rates["on"],
        "outbox_cost_ratio": ratio,
        "earlier_rows_stamped_not_delivered": backlog,
        "reservations_during_relay_run": expected,
        "events_delivered": delivered,
        "relay_events_per_second": round(delivered / span, 1) if span else None,
        "lag_p50_ms": round(lags[len(lags) // 2], 1) if lags else None,
        "lag_p99_ms": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 1) if lags else None,
    }
    write_result("events_relay", payload)
    return payload


if __name__ == "__main__":
    main()
