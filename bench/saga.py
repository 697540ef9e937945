"""B3, saga: completed checkouts per second through the real saga, against the floor: the SAME
CheckoutWorkflow with every activity replaced by a no-op, on the same Temporal server in the same run,
and against the ceiling: a minimal workflow that completes in its first task (``bench.minimal_workflow``).
Also reports what one checkout costs Temporal: history events, workflow tasks, and the commands of its
shape (activities, local activities, updates, search-attribute upserts), read from its history.

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
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psutil
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities import models
from activities.checkout import CheckoutActivities
from bench.common import median, plot, write_result
from bench.minimal_workflow import MinimalWorkflow
from bench.stack import checkout_stack
from invsaga.client import CheckoutClient
from invsaga.domain.checkout import (
    STEPWISE_WORKFLOW_TYPE,
    CheckoutLine,
    CheckoutRequest,
    CheckoutStatus,
    workflow_id_for,
)
from invsaga.domain.stock import HoldState, ReserveOutcome, StockLine, TransitionOutcome
from invsaga.settings import Settings, load_settings
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore
from invsaga.temporal.codec import EncryptionCodec, PayloadKeys, new_key_entry
from invsaga.temporal.configured import connect_configured, payload_keys
from workers.worker import WORKFLOW_RUNNER, WorkerDeps, build_worker
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

    async def sold_lines(self, order_id: str) -> int:
        return 0

    def all(self) -> list[Any]:
        composite = CheckoutActivities(self, self, route=lambda lines: {0: lines}, sold=self.sold_lines)
        return [self.prepare_order, self.reserve_stock, self.release_stock, self.pin_stock, self.commit_stock,
                self.finish_order, self.charge_payment, self.refund_payment, composite.place_order,
                composite.confirm_order, composite.release_order, composite.sold_lines]  # fmt: skip


class StepwiseCheckoutClient(CheckoutClient):
    """Starts the stepwise shape (``StepwiseCheckoutWorkflow``, the type before the lean checkout), so
    the same run measures what the lean shape saves."""

    workflow_type = STEPWISE_WORKFLOW_TYPE


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


async def _drive_minimal(client: Client, queue: str, count: int, concurrency: int) -> tuple[float, list[str]]:
    gate = asyncio.Semaphore(concurrency)
    ids = [f"b3-minimal-{uuid.uuid4().hex[:16]}" for _ in range(count)]

    async def one(workflow_id: str) -> None:
        async with gate:
            await client.execute_workflow(MinimalWorkflow.run, workflow_id, id=workflow_id, task_queue=queue)

    started = time.perf_counter()
    await asyncio.gather(*(one(workflow_id) for workflow_id in ids))
    return count / (time.perf_counter() - started), ids


#: What one checkout's history is made of: these are what Temporal Cloud bills as actions (a started
#: workflow, an activity, an update, an upsert other than the patch's TemporalChangeVersion) and what a
#: self-hosted cluster writes; local activities are counted one per marker (an upper bound).
_SHAPE = {
    "workflow_tasks": EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    "activities": EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    "local_activities_and_patches": EventType.EVENT_TYPE_MARKER_RECORDED,
    "updates": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    "upserts": EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    "timers": EventType.EVENT_TYPE_TIMER_STARTED,
}


async def _shape(client: Client, workflow_ids: list[str]) -> dict[str, float]:
    """Median per workflow, over ten of them: history events, and each kind in ``_SHAPE``."""
    counts: dict[str, list[float]] = {"history_events": [], **{kind: [] for kind in _SHAPE}}
    for workflow_id in workflow_ids[:10]:
        events = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
        counts["history_events"].append(float(len(events)))
        for kind, event_type in _SHAPE.items():
            counts[kind].append(float(sum(e.event_type == event_type for e in events)))
        upserted = [
            e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            for e in events
            if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        ]
        patch_upserts = sum("TemporalChangeVersion" in fields for fields in upserted)
        counts.setdefault("billed_upserts", []).append(counts["upserts"][-1] - patch_upserts)
    return {kind: median(values) for kind, values in counts.items()}


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
    """The minimal workflow, then the two floors and the plain and the encrypted saga, each pair swapped
    every other round, then the stepwise saga."""
    sagas = ("saga", "saga_encrypted") if index % 2 == 0 else ("saga_encrypted", "saga")
    floors = ("floor", "floor_sandboxed") if index % 2 == 0 else ("floor_sandboxed", "floor")
    return ("minimal", *floors, *sagas, "saga_stepwise")


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

    modes = ("minimal", "floor", "floor_sandboxed", "saga", "saga_encrypted", "saga_stepwise")
    rounds: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu_ms: dict[str, dict[str, list[float]]] = {mode: {} for mode in rounds}
    shapes: dict[str, dict[str, float]] = {}
    async with WorkerDeps.open(settings) as deps:
        for index in range(args.rounds):
            for mode in _round_order(index):
                queue = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
                temporal = clients["encrypted" if mode == "saga_encrypted" else "plain"]
                if mode == "minimal":
                    async with Worker(temporal, task_queue=queue, workflows=[MinimalWorkflow]):
                        cpu_before = _cpu_seconds(temporal_pid)
                        rate, ids = await _drive_minimal(temporal, queue, args.checkouts, args.concurrency)
                        for where, seconds in _cpu_seconds(temporal_pid).items():
                            used = (seconds - cpu_before[where]) / args.checkouts * 1000
                            cpu_ms[mode].setdefault(where, []).append(used)
                        shapes[mode] = await _shape(temporal, ids)
                    rounds[mode].append(rate)
                    continue
                if mode in ("floor", "floor_sandboxed"):
                    # The worker's own runner; floor_sandboxed is the SDK's default, which re-imports
                    # the workflow's module for every run (the lever WORKFLOW_RUNNER pulls).
                    runner = WORKFLOW_RUNNER if mode == "floor" else SandboxedWorkflowRunner()
                    worker = Worker(
                        temporal, task_queue=queue, workflows=[CheckoutWorkflow], workflow_runner=runner,
                        activities=NoopActivities().all(), max_concurrent_activities=100,
                    )  # fmt: skip
                else:
                    mode_settings = encrypted if mode == "saga_encrypted" else settings
                    worker = build_worker(temporal, mode_settings, deps, task_queue=queue)
                kind = StepwiseCheckoutClient if mode == "saga_stepwise" else CheckoutClient
                client = kind(temporal, task_queue=queue)
                async with worker:
                    cpu_before = _cpu_seconds(temporal_pid)
                    rate, ids = await _drive(client, args.checkouts, args.concurrency)
                    for where, seconds in _cpu_seconds(temporal_pid).items():
                        used = (seconds - cpu_before[where]) / args.checkouts * 1000
                        cpu_ms[mode].setdefault(where, []).append(used)
                    shapes[mode] = await _shape(temporal, [workflow_id_for(i) for i in ids])
                rounds[mode].append(rate)
    minimal, floor, saga = median(rounds["minimal"]), median(rounds["floor"]), median(rounds["saga"])
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
        "target_ratio_min": 0.9,
        "met": saga / floor >= 0.9,
        # The sandbox lever: the same floor with the SDK's default runner, and the CPU it costs.
        "floor_sandboxed_per_second_median": round(median(rounds["floor_sandboxed"]), 1),
        "passthrough_ratio": round(floor / median(rounds["floor_sandboxed"]), 3),
        # The shape lever: the same real saga as the stepwise workflow type, in the same run.
        "saga_stepwise_per_second_median": round(median(rounds["saga_stepwise"]), 1),
        "lean_ratio": round(saga / median(rounds["saga_stepwise"]), 3),
        "minimal_workflow_per_second_median": round(minimal, 1),
        "ratio_to_minimal": round(saga / minimal, 3),
        "target_ratio_to_minimal_min": 0.5,
        "met_ratio_to_minimal": saga / minimal >= 0.5,
        # Per workflow, the median of ten: the targets are at most 18 events and 3 workflow tasks.
        "shape": shapes,
        "met_shape": shapes["saga"]["history_events"] <= 18 and shapes["saga"]["workflow_tasks"] <= 3,
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

    with checkout_stack(2) as stack:
        connection = {
            "shard_dsns": ",".join(stack.fleet.shard_dsns), "core_dsn": stack.core_dsn, "pool_size": 20,
            "temporal_address": stack.temporal.address, "payment_url": stack.payment_url,
        }  # fmt: skip
        # Both explicit, so an INVSAGA_PAYLOAD_KEYS in the environment cannot blur the comparison.
        settings = load_settings(**connection, payload_keys="", payload_keys_file="")
        encrypted = load_settings(**connection, payload_keys=new_key_entry("bench"), payload_keys_file="")
        payload = asyncio.run(_run(settings, encrypted, args, stack.temporal.process.pid))
    write_result("b3_saga", payload)
    xs: list[float] = list(range(1, args.rounds + 1))
    plot(
        "b3_saga",
        "B3: completed checkouts/s per round (same Temporal dev server)",
        {
            "minimal workflow (one task)": (xs, payload["rounds"]["minimal"]),
            "no-op floor": (xs, payload["rounds"]["floor"]),
            "no-op floor, SDK's default sandbox": (xs, payload["rounds"]["floor_sandboxed"]),
            "real saga": (xs, payload["rounds"]["saga"]),
            "real saga, payloads encrypted": (xs, payload["rounds"]["saga_encrypted"]),
            "real saga, stepwise shape": (xs, payload["rounds"]["saga_stepwise"]),
        },
        "round",
        "checkouts per second",
    )
    return payload


if __name__ == "__main__":
    main()
