"""B3, saga: completed checkouts per second through the real saga, against the floor: the SAME
CheckoutWorkflow with every activity replaced by a no-op, on the same Temporal server in the same run.
Also reports history events per checkout.

Each round also runs the real saga with payload encryption on (a worker and a client connected with
``payload_keys`` set, as ``INVSAGA_PAYLOAD_KEYS`` would), right before or after the plain saga round,
alternating, so the machine's drift hits both alike: ``codec_ratio`` is encrypted / plain. To explain
it, the run counts the payloads that go through the codec per checkout and times the codec on one
CheckoutRequest payload.

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
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities import models
from bench.common import median, plot, write_result
from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port, wait_for_port
from invsaga.dev.postgres import start_fleet
from invsaga.dev.temporal import start_dev_server
from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus
from invsaga.domain.stock import HoldState, ReserveOutcome, StockLine, TransitionOutcome
from invsaga.settings import Settings, load_settings
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore
from invsaga.temporal.codec import EncryptionCodec, PayloadKeys, new_key_entry
from invsaga.temporal.configured import connect_configured, payload_keys
from workers.worker import WorkerDeps, build_worker
from workflows.checkout import CheckoutWorkflow

SKUS = [f"SAGA-{n}" for n in range(16)]
#: Timing the codec alone: the median of SAMPLES runs of BATCH encodes, then BATCH decodes.
CODEC_SAMPLES, CODEC_BATCH = 9, 2000


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


def _request(n: int) -> CheckoutRequest:
    return CheckoutRequest(
        order_id=f"b3-{uuid.uuid4().hex[:16]}", customer_id="bench",
        lines=[CheckoutLine(sku=SKUS[n % len(SKUS)], quantity=1)], payment_token="tok_success",
    )  # fmt: skip


async def _drive(client: CheckoutClient, count: int, concurrency: int) -> tuple[float, list[str]]:
    gate = asyncio.Semaphore(concurrency)
    ids: list[str] = []

    async def one(n: int) -> None:
        request = _request(n)
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


def _count_payloads(client: Client) -> dict[str, int]:
    """Counts the payloads ``client``'s codec encodes and decodes; its worker shares the codec."""
    codec = client.data_converter.payload_codec
    assert codec is not None, "the encrypted client has no codec"
    counts = {"encoded": 0, "decoded": 0}
    encode, decode = codec.encode, codec.decode

    async def counted_encode(payloads: Sequence[Payload]) -> list[Payload]:
        counts["encoded"] += len(payloads)
        return await encode(payloads)

    async def counted_decode(payloads: Sequence[Payload]) -> list[Payload]:
        counts["decoded"] += len(payloads)
        return await decode(payloads)

    codec.encode = counted_encode  # type: ignore[method-assign]
    codec.decode = counted_decode  # type: ignore[method-assign]
    return counts


async def _codec_cost(keys: PayloadKeys) -> dict[str, Any]:
    """The codec alone on one CheckoutRequest payload, through the same awaits Temporal makes."""
    codec = EncryptionCodec(keys)
    [payload] = pydantic_data_converter.payload_converter.to_payloads([_request(0)])
    [encrypted] = await codec.encode([payload])
    encode_us: list[float] = []
    decode_us: list[float] = []
    for _ in range(CODEC_SAMPLES):
        started = time.perf_counter()
        for _ in range(CODEC_BATCH):
            await codec.encode([payload])
        middle = time.perf_counter()
        for _ in range(CODEC_BATCH):
            await codec.decode([encrypted])
        encode_us.append((middle - started) / CODEC_BATCH * 1e6)
        decode_us.append((time.perf_counter() - middle) / CODEC_BATCH * 1e6)
    return {
        "payload_bytes": {"plain": payload.ByteSize(), "encrypted": encrypted.ByteSize()},
        "encode_us_median": round(median(encode_us), 2),
        "decode_us_median": round(median(decode_us), 2),
        "encode_decode_us_median": round(median(list(map(sum, zip(encode_us, decode_us, strict=True)))), 2),
    }


def _cpu_seconds(temporal_pid: int) -> dict[str, float]:
    """CPU seconds so far: this process (the client, the worker and its activities), the Temporal dev
    server, and the whole machine (Postgres, the payment sandbox, and whatever else is running)."""
    times = psutil.cpu_times()
    return {
        "bench_process": sum(psutil.Process().cpu_times()[:2]),
        "temporal": sum(psutil.Process(temporal_pid).cpu_times()[:2]),
        "machine": float(sum(times) - times.idle - getattr(times, "iowait", 0.0)),
    }


def _round_order(index: int) -> tuple[str, ...]:
    """The floor first, then the plain and the encrypted saga, swapped every other round."""
    return ("floor", "saga", "saga_encrypted") if index % 2 == 0 else ("floor", "saga_encrypted", "saga")


async def _run(
    settings: Settings, encrypted: Settings, args: argparse.Namespace, temporal_pid: int
) -> dict[str, Any]:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    await upsert_products(databases.core, [Product(sku=s, name=s, price=Decimal("1.00")) for s in SKUS])
    for sku in SKUS:
        await store.receive(sku, "main", 1_000_000, idempotency_key=f"bench-saga-{sku}")
    await databases.close()

    clients = {"plain": await connect_configured(settings), "encrypted": await connect_configured(encrypted)}
    assert clients["plain"].data_converter.payload_codec is None, "the plain variant encrypts"
    counted = _count_payloads(clients["encrypted"])
    keys = payload_keys(encrypted)
    assert keys is not None
    codec = await _codec_cost(keys)

    rounds: dict[str, list[float]] = {"floor": [], "saga": [], "saga_encrypted": []}
    cpu_ms: dict[str, dict[str, list[float]]] = {mode: {} for mode in rounds}
    events: dict[str, float] = {}
    async with WorkerDeps.open(settings) as deps:
        for index in range(args.rounds):
            for mode in _round_order(index):
                queue = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
                temporal = clients["encrypted" if mode == "saga_encrypted" else "plain"]
                if mode == "floor":
                    worker = Worker(
                        temporal, task_queue=queue, workflows=[CheckoutWorkflow],
                        activities=NoopActivities().all(), max_concurrent_activities=100,
                    )  # fmt: skip
                else:
                    mode_settings = encrypted if mode == "saga_encrypted" else settings
                    worker = build_worker(temporal, mode_settings, deps, task_queue=queue)
                client = CheckoutClient(temporal, task_queue=queue)
                async with worker:
                    cpu_before = _cpu_seconds(temporal_pid)
                    rate, ids = await _drive(client, args.checkouts, args.concurrency)
                    for where, seconds in _cpu_seconds(temporal_pid).items():
                        used = (seconds - cpu_before[where]) / args.checkouts * 1000
                        cpu_ms[mode].setdefault(where, []).append(used)
                    events[mode] = await _events_per_checkout(client, ids)
                rounds[mode].append(rate)
    floor, saga = median(rounds["floor"]), median(rounds["saga"])
    saga_encrypted = median(rounds["saga_encrypted"])
    # Only the encrypted rounds use the counted codec.
    per_checkout = {kind: n / (args.checkouts * args.rounds) for kind, n in counted.items()}
    codec_us = per_checkout["encoded"] * codec["encode_us_median"]
    codec_us += per_checkout["decoded"] * codec["decode_us_median"]
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
        "saga_encrypted_per_second_median": round(saga_encrypted, 1),
        "codec_ratio": round(saga_encrypted / saga, 3),
        "codec": {
            "cpu_ms_per_checkout_median": {
                mode: {where: round(median(ms), 1) for where, ms in by_where.items()}
                for mode, by_where in cpu_ms.items()
            },
            "payloads_per_checkout": {k: round(v, 1) for k, v in per_checkout.items()},
            **codec,
            # The codec's own CPU per checkout; the SDK's walk of each activation for payloads is not in it.
            "codec_ms_per_checkout": round(codec_us / 1000, 3),
        },
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
            connection = {
                "shard_dsns": ",".join(fleet.shard_dsns), "core_dsn": fleet.core_dsn, "pool_size": 20,
                "temporal_address": temporal.address, "payment_url": f"http://127.0.0.1:{port}",
            }  # fmt: skip
            # Both explicit, so an INVSAGA_PAYLOAD_KEYS in the environment cannot blur the comparison.
            settings = load_settings(**connection, payload_keys="", payload_keys_file="")
            encrypted = load_settings(**connection, payload_keys=new_key_entry("bench"), payload_keys_file="")
            payload = asyncio.run(_run(settings, encrypted, args, temporal.process.pid))
        finally:
            if payments is not None:
                payments.terminate()
                payments.wait()
            temporal.stop()
            fleet.stop()
    write_result("b3_saga", payload)
    xs: list[float] = list(range(1, args.rounds + 1))
    plot(
        "b3_saga",
        "B3: completed checkouts/s per round (same Temporal dev server)",
        {
            "no-op floor": (xs, payload["rounds"]["floor"]),
            "real saga": (xs, payload["rounds"]["saga"]),
            "real saga, payloads encrypted": (xs, payload["rounds"]["saga_encrypted"]),
        },
        "round",
        "checkouts per second",
    )
    return payload


if __name__ == "__main__":
    main()
