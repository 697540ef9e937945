"""B3, saga: completed checkouts per second through the real saga, against the floor: the SAME
CheckoutWorkflow with every activity replaced by a no-op, on the same Temporal server in the same run.
Also reports history events per checkout.

    .venv/bin/python -m bench.saga [--checkouts 300] [--concurrency 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client

from activities import models
from bench.common import median, plot, write_result
from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port, wait_for_port
from invsaga.dev.postgres import start_fleet
from invsaga.dev.temporal import start_dev_server
from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus
from invsaga.domain.stock import HoldState, ReserveOutcome, StockLine, TransitionOutcome
from invsaga.settings import Settings, load_settings
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.orders import Product, upsert_products
from invsaga.store.stock import StockStore
from invsaga.temporal.connection import connect
from workers.worker import WorkerDeps, build_worker
from workflows.checkout import CheckoutWorkflow

SKUS = [f"SAGA-{n}" for n in range(16)]


class NoopActivities:
    """The saga's activities with the same names, inputs and outputs, doing nothing."""

    @activity.defn(name="prepare_order")
    async def prepare_order(self, inp: models.PrepareOrderInput) -> models.PreparedOrder:
        lines = [StockLine.model_validate(line.model_dump()) for line in inp.request.lines]
        return models.PreparedOrder(
            order_id=inp.request.order_id, amount_minor=100, currency="USD", hold_ttl_seconds=900,
            shards=[models.ShardLines(shard=0, lines=lines)], payment_deadline_seconds=300,
        )  # fmt: skip

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, inp: models.ReserveInput) -> ReserveOutcome:
        return ReserveOutcome(order_id=inp.order_id, state=HoldState.HELD)

    @activity.defn(name="release_stock")
    async def release_stock(self, inp: models.ReleaseInput) -> TransitionOutcome:
        return TransitionOutcome(order_id=inp.order_id, moved_lines=0, state=None)

    @activity.defn(name="pin_stock")
    async def pin_stock(self, inp: models.PinInput) -> TransitionOutcome:
        return TransitionOutcome(order_id=inp.order_id, moved_lines=1, state=HoldState.HELD)

    @activity.defn(name="commit_stock")
    async def commit_stock(self, inp: models.CommitInput) -> TransitionOutcome:
        return TransitionOutcome(order_id=inp.order_id, moved_lines=1, state=HoldState.COMMITTED)

    @activity.defn(name="finish_order")
    async def finish_order(self, inp: models.FinishOrderInput) -> str:
        return inp.status

    @activity.defn(name="charge_payment")
    async def charge_payment(self, inp: models.ChargeInput) -> models.ChargeOutcome:
        return models.ChargeOutcome(charge_id="noop", status="succeeded", amount_minor=inp.amount_minor)

    @activity.defn(name="refund_payment")
    async def refund_payment(self, inp: models.RefundInput) -> models.RefundOutcome:
        return models.RefundOutcome(refunded_minor=0)

    def all(self) -> list[Any]:
        return [self.prepare_order, self.reserve_stock, self.release_stock, self.pin_stock, self.commit_stock,
                self.finish_order, self.charge_payment, self.refund_payment]  # fmt: skip


async def _drive(client: CheckoutClient, count: int, concurrency: int) -> tuple[float, list[str]]:
    gate = asyncio.Semaphore(concurrency)
    ids: list[str] = []

    async def one(n: int) -> None:
        request = CheckoutRequest(
            order_id=f"b3-{uuid.uuid4().hex[:16]}", customer_id="bench",
            lines=[CheckoutLine(sku=SKUS[n % len(SKUS)], quantity=1)], payment_token="tok_success",
        )  # fmt: skip
        async with gate:
            result = await client.checkout(request)
        if result.status is not CheckoutStatus.CONFIRMED:
            raise RuntimeError(f"checkout {request.order_id} ended {result.status}: {result.detail}")
        ids.append(request.order_id)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - started), ids


async def _events_per_checkout(client: CheckoutClient, order_ids: list[str]) -> float:
    counts = []
    for order_id in order_ids[:10]:
        history = await client.handle(order_id).fetch_history()
        counts.append(len(history.events))
    return median([float(c) for c in counts])


async def _run(settings: Settings, temporal: Client, args: argparse.Namespace) -> dict[str, Any]:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    await upsert_products(databases.core, [Product(sku=s, name=s, price=Decimal("1.00")) for s in SKUS])
    for sku in SKUS:
        await store.receive(sku, "main", 1_000_000, idempotency_key=f"bench-saga-{sku}")
    await databases.close()

    rounds: dict[str, list[float]] = {"floor": [], "saga": []}
    events: dict[str, float] = {}
    async with WorkerDeps.open(settings) as deps:
        for _ in range(args.rounds):
            for mode in ("floor", "saga"):
                queue = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
                if mode == "saga":
                    worker = build_worker(temporal, settings, deps, task_queue=queue)
                else:
                    from temporalio.worker import Worker

                    worker = Worker(
                        temporal, task_queue=queue, workflows=[CheckoutWorkflow],
                        activities=NoopActivities().all(), max_concurrent_activities=100,
                    )  # fmt: skip
                client = CheckoutClient(temporal, task_queue=queue)
                async with worker:
                    rate, ids = await _drive(client, args.checkouts, args.concurrency)
                    events[mode] = await _events_per_checkout(client, ids)
                rounds[mode].append(rate)
    floor, saga = median(rounds["floor"]), median(rounds["saga"])
    return {
        "benchmark": "B3 saga",
        "checkouts_per_round": args.checkouts,
        "concurrency": args.concurrency,
        "rounds": {k: [round(v, 1) for v in vs] for k, vs in rounds.items()},
        "saga_per_second_median": round(saga, 1),
        "noop_floor_per_second_median": round(floor, 1),
        "ratio": round(saga / floor, 3),
        "history_events_per_checkout": events,
        "target_ratio_min": 0.9,
        "met": saga / floor >= 0.9,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkouts", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="invsaga-b3-") as scratch:
        fleet = start_fleet(2, fsync=True)
        temporal = start_dev_server(db_file=Path(scratch) / "temporal.sqlite", ui=False)
        payments: subprocess.Popen[bytes] | None = None
        try:
            assert fleet.core is not None
            payments_dsn = fleet.core.create_database("payments")
            port = free_port()
            env = {**os.environ, "INVSAGA_PAYMENT_DSN": payments_dsn}
            payments = subprocess.Popen(
                [sys.executable, "-m", "invsaga", "payments", "serve", "--port", str(port)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for_port(port)
            settings = load_settings(
                shard_dsns=",".join(fleet.shard_dsns), core_dsn=fleet.core_dsn, pool_size=20,
                temporal_address=temporal.address, payment_url=f"http://127.0.0.1:{port}",
            )  # fmt: skip

            async def go() -> dict[str, Any]:
                return await _run(
                    settings, await connect(settings.temporal_address, settings.temporal_namespace), args
                )

            payload = asyncio.run(go())
        finally:
            if payments is not None:
                payments.terminate()
                payments.wait()
            temporal.stop()
            fleet.stop()
    write_result("b3_saga", payload)
    plot(
        "b3_saga",
        "B3: completed checkouts/s per round (same Temporal dev server)",
        {
            "no-op floor": (list(range(1, args.rounds + 1)), payload["rounds"]["floor"]),
            "real saga": (list(range(1, args.rounds + 1)), payload["rounds"]["saga"]),
        },
        "round",
        "checkouts per second",
    )
    return payload


if __name__ == "__main__":
    main()
