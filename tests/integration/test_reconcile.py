"""The order reconciler against real servers: every kind of disagreement planted with real data (real
checkouts, terminated workflows, SQL and the payment sandbox's own HTTP API), found, repaired where that
is safe, and left for a person where it is not.

Each test gets its own core database and shards (on the session's Postgres servers), so "reconcile
reports nothing" means exactly that, and no order another test leaves behind can leak in.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from activities.reconcile import ReconcileInput, ReconcileSummary
from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port
from invsaga.domain.checkout import CheckoutRequest, CheckoutStatus, workflow_id_for
from invsaga.domain.reconcile import ABANDONED, FindingKind
from invsaga.domain.stock import StockLine
from invsaga.payments.client import PaymentClient
from invsaga.reconcile import ReconcileReport, _ended_checkouts, reconcile
from invsaga.settings import Settings
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.orders import price_and_record_order
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured
from tests.helpers import request, skus_on_shard
from tests.integration.test_checkout_saga import catalog, charges_for, order
from tests.integration.test_cli import INVSAGA, CliResult, cli_env
from workers.schedules import ensure_reconciler_schedule
from workers.worker import WorkerDeps, build_worker
from workflows.checkout import CheckoutWorkflow
from workflows.order_reconciler import SCHEDULE_ID, OrderReconcilerWorkflow

K = FindingKind


@dataclass
class World:
    settings: Settings
    databases: Databases
    store: StockStore
    saga: CheckoutClient
    temporal: Client
    payments: PaymentClient
    sandbox: Any
    task_queue: str

    async def reconcile(self, **kwargs: Any) -> ReconcileReport:
        return await reconcile(self.databases, self.temporal, self.payments, **kwargs)


@pytest.fixture
async def world(pg_fleet, saga_settings, temporal_client, payment_sandbox) -> AsyncIterator[World]:
    """Fresh databases, migrated, with a worker on its own task queue."""
    name = f"reconcile_{uuid.uuid4().hex[:10]}"
    shard_dsns = [await asyncio.to_thread(server.create_database, name) for server in pg_fleet.shards]
    core_dsn = await asyncio.to_thread(pg_fleet.core.create_database, name)
    settings = Settings(**{**saga_settings.model_dump(), "shard_dsns": shard_dsns, "core_dsn": core_dsn})
    await migrate_all(settings)
    task_queue = f"test-{uuid.uuid4()}"
    async with (
        WorkerDeps.open(settings) as deps,
        build_worker(temporal_client, settings, deps, task_queue=task_queue),
    ):
        yield World(
            settings=settings,
            databases=deps.databases,
            store=deps.store,
            saga=CheckoutClient(temporal_client, task_queue=task_queue),
            temporal=temporal_client,
            payments=deps.payments,
            sandbox=payment_sandbox,
            task_queue=task_queue,
        )


# --- planting ------------------------------------------------------------------------------------


async def confirmed(world: World, *lines: tuple[str, int]) -> CheckoutRequest:
    checkout = order(*lines)
    assert (await world.saga.checkout(checkout)).status is CheckoutStatus.CONFIRMED
    return checkout


async def terminated_mid_payment(world: World, *lines: tuple[str, int]) -> CheckoutRequest:
    """A checkout terminated once its charge has landed (the answer is held back 3 s) and before it
    commits: pinned holds, a succeeded charge, an order row still pending."""
    checkout = order(*lines, token="tok_slow_3000")
    assert (await world.saga.start(checkout)).held
    async with asyncio.timeout(10):
        # The provider offers no event for "recorded"; its own API is polled like a client would.
        while not await charges_for(world.sandbox, checkout.order_id):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await world.saga.handle(checkout.order_id).terminate(reason="test: operator terminated it")
    return checkout


async def refund_part(world: World, order_id: str, amount: int) -> None:
    """A goodwill refund made at the provider, outside the saga."""
    [charge] = await charges_for(world.sandbox, order_id)
    async with httpx.AsyncClient(base_url=world.sandbox.url) as http:
        response = await http.post(
            "/v1/refunds",
            json={"charge_id": charge["id"], "amount": amount},
            headers={"Idempotency-Key": f"goodwill-{order_id}"},
        )
    response.raise_for_status()


async def late_charge(world: World, order_id: str, amount: int) -> None:
    """A charge under the order's key that lands after its checkout ended without paying."""
    async with httpx.AsyncClient(base_url=world.sandbox.url) as http:
        response = await http.post(
            "/v1/charges",
            json={"amount": amount, "currency": "USD", "token": "tok_success", "reference": order_id},
            headers={"Idempotency-Key": f"charge-{order_id}"},
        )
    response.raise_for_status()


async def without_checkout(
    world: World, sku: str, quantity: int, *, row: bool = True, commit: bool = False
) -> str:
    """Holds (and an order row) that no workflow owns, as a crash or a hand-made hold leaves them."""
    order_id = f"ord-{uuid.uuid4().hex[:12]}"
    if row:
        await price_and_record_order(
            world.databases.core,
            order_id=order_id,
            customer_id="cust-1",
            currency="USD",
            lines=[StockLine(sku=sku, quantity=quantity)],
        )
    shard = world.store.router.shard_of(sku)
    await world.store.reserve(shard, request(order_id, (sku, quantity)))
    if commit:
        await world.store.commit(shard, order_id)
    return order_id


async def sql(engine, statement: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(statement), params)


async def snapshot(world: World, order_ids: list[str]) -> dict[str, Any]:
    """Everything the reconciler could change, to prove a report-only run changes nothing."""
    state: dict[str, Any] = {}
    async with world.databases.core.connect() as conn:
        rows = await conn.execute(text("SELECT order_id, status, reason, updated_at FROM orders"))
        state["orders"] = sorted(map(tuple, rows))
    for index, engine in enumerate(world.databases.shards):
        async with engine.connect() as conn:
            holds = await conn.execute(
                text("SELECT order_id, sku, state, pinned_at, updated_at FROM reservations")
            )
            state[f"holds {index}"] = sorted(map(tuple, holds))
            stock = await conn.execute(
                text("SELECT sku, location, on_hand, reserved, version FROM stock_levels")
            )
            state[f"stock {index}"] = sorted(map(tuple, stock))
    state["charges"] = {order_id: await charges_for(world.sandbox, order_id) for order_id in order_ids}
    return state


def by_order(report: ReconcileReport) -> dict[str, dict[FindingKind, bool]]:
    """Each order's findings: kind -> whether the fix is safe."""
    found: dict[str, dict[FindingKind, bool]] = {}
    for finding in report.findings:
        found.setdefault(finding.order_id, {})[finding.kind] = finding.safe
    return found


async def reservation_states(world: World, order_id: str) -> list[tuple[str, bool]]:
    states: list[tuple[str, bool]] = []
    for engine in world.databases.shards:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT state, pinned_at IS NOT NULL FROM reservations WHERE order_id = :o ORDER BY sku"
                ),
                {"o": order_id},
            )
            states.extend((row[0], row[1]) for row in rows)
    return states


async def order_row(world: World, order_id: str) -> tuple[str, str | None]:
    async with world.databases.core.connect() as conn:
        row = (
            await conn.execute(text("SELECT status, reason FROM orders WHERE order_id = :o"), {"o": order_id})
        ).one()
    return row.status, row.reason


# --- the tests -----------------------------------------------------------------------------------


async def test_every_kind_is_found_the_safe_ones_repaired_and_the_rest_left_for_a_person(world):
    (a0, c0, d0, h0, k0) = skus_on_shard(world.store.router, 0, 5)
    (a1, b1, e1, f1, g1, i1) = skus_on_shard(world.store.router, 1, 6)
    await catalog(world.databases, world.store, *((s, 10) for s in (a0, c0, d0, h0, k0, a1, b1, e1, f1, g1)))
    await catalog(world.databases, world.store, (i1, 1))

    # a + g: terminated after a full charge, its holds pinned on both shards: sold, so finished.
    uncommitted = await terminated_mid_payment(world, (a0, 2), (a1, 1))
    # d + e + g: the same, but a goodwill refund came first: not paid in full, so not sold.
    part_refunded = await terminated_mid_payment(world, (b1, 2))
    await refund_part(world, part_refunded.order_id, 500)
    # b: a confirmed order whose committed line was expired by hand.
    lost = await confirmed(world, (c0, 1))
    await sql(world.databases.shards[0], "UPDATE reservations SET state = 'expired' WHERE order_id = :o",
              o=lost.order_id)  # fmt: skip
    # c: a confirmed order partly refunded at the provider.
    unpaid = await confirmed(world, (d0, 2))
    await refund_part(world, unpaid.order_id, 700)
    # f + g: committed stock for an order nobody checked out or paid for.
    committed = await without_checkout(world, e1, 3, commit=True)
    # e + g: an order row and holds with no workflow.
    held = await without_checkout(world, f1, 2)
    # h: holds without an order row or a workflow.
    orphan = await without_checkout(world, g1, 1, row=False)
    # g, for a person: a declined checkout whose final row was changed by hand.
    rewritten = order((h0, 1), token="tok_decline")
    assert (await world.saga.checkout(rewritten)).status is CheckoutStatus.REJECTED
    await sql(world.databases.core, "UPDATE orders SET status = 'cancelled' WHERE order_id = :o",
              o=rewritten.order_id)  # fmt: skip
    # d: out of stock, and a charge under its key landed anyway.
    late = order((i1, 2))
    assert (await world.saga.checkout(late)).status is CheckoutStatus.REJECTED
    await late_charge(world, late.order_id, 2500)
    # Clean orders stay out of the report.
    clean = [await confirmed(world, (k0, 1)), order((k0, 1), token="tok_decline")]
    await world.saga.checkout(clean[1])

    expected = {
        uncommitted.order_id: {K.UNCOMMITTED: True, K.ORDER_STATUS: True},
        part_refunded.order_id: {K.NOT_REFUNDED: True, K.NOT_RELEASED: True, K.ORDER_STATUS: True},
        lost.order_id: {K.HOLDS_LOST: False},
        unpaid.order_id: {K.NOT_PAID: False},
        committed: {K.COMMITTED_UNSOLD: False, K.ORDER_STATUS: True},
        held: {K.NOT_RELEASED: True, K.ORDER_STATUS: True},
        orphan: {K.ORPHAN_HOLDS: True},
        rewritten.order_id: {K.ORDER_STATUS: False},
        late.order_id: {K.NOT_REFUNDED: True},
    }
    ids = [*expected, *(c.order_id for c in clean)]

    before = await snapshot(world, ids)
    report = await world.reconcile()
    assert by_order(report) == expected
    assert not report.clean and report.checkouts_running == 0 and report.orders_checked == len(ids)
    assert not any(f.repaired for f in report.findings)
    assert await snapshot(world, ids) == before, "a report-only run must change nothing"
    [uncommitted_finding] = [f for f in report.findings if f.kind is K.UNCOMMITTED]
    assert uncommitted_finding.shards == [0, 1]
    assert uncommitted_finding.evidence.checkout.state.value == "TERMINATED"
    assert "shard 0 pinned=1, shard 1 pinned=1" in uncommitted_finding.evidence.summary()

    repaired = await world.reconcile(repair=True)
    assert by_order(repaired) == expected
    assert [(f.order_id, f.kind) for f in repaired.findings if f.repaired != f.safe] == []
    assert all(f.repair_error is None for f in repaired.findings)

    # Sold: committed everywhere and recorded confirmed, and the money kept.
    assert await reservation_states(world, uncommitted.order_id) == [("committed", True)] * 2
    assert await order_row(world, uncommitted.order_id) == ("confirmed", None)
    [charge] = await charges_for(world.sandbox, uncommitted.order_id)
    assert charge["refunded_amount"] == 0
    levels = await world.store.get_many([a0, a1])
    assert [(lv[0].on_hand, lv[0].reserved) for lv in (levels[a0], levels[a1])] == [(8, 0), (9, 0)]
    # Not sold: the rest refunded, the pinned holds released, recorded rejected.
    [charge] = await charges_for(world.sandbox, part_refunded.order_id)
    assert charge["refunded_amount"] == charge["amount"] == 2500
    assert await reservation_states(world, part_refunded.order_id) == [("released", True)]
    assert await order_row(world, part_refunded.order_id) == ("rejected", ABANDONED)
    [charge] = await charges_for(world.sandbox, late.order_id)
    assert charge["refunded_amount"] == charge["amount"]
    assert await reservation_states(world, held) == [("released", False)]
    assert await reservation_states(world, orphan) == [("released", False)]
    # For a person: nothing un-committed, nothing charged.
    assert await reservation_states(world, committed) == [("committed", False)]
    assert await order_row(world, committed) == ("rejected", ABANDONED)
    [charge] = await charges_for(world.sandbox, unpaid.order_id)
    assert charge["refunded_amount"] == 700

    again = await world.reconcile(repair=True)
    assert by_order(again) == {
        lost.order_id: {K.HOLDS_LOST: False},
        unpaid.order_id: {K.NOT_PAID: False},
        committed: {K.COMMITTED_UNSOLD: False},
        rewritten.order_id: {K.ORDER_STATUS: False},
    }
    assert len(again.needs_person) == 4


async def test_clean_data_reports_nothing(world):
    (a,) = skus_on_shard(world.store.router, 0, 1)
    (b,) = skus_on_shard(world.store.router, 1, 1)
    await catalog(world.databases, world.store, (a, 5), (b, 1))
    await confirmed(world, (a, 1), (b, 1))
    await confirmed(world, (a, 2))
    for checkout in (order((a, 1), token="tok_decline"), order((b, 3)), order((a, 1), token="tok_flaky_1")):
        await world.saga.checkout(checkout)
    cancelled = order((a, 1), token="tok_slow_800")
    assert (await world.saga.start(cancelled)).held
    assert (await world.saga.cancel(cancelled.order_id)).accepted
    assert (await world.saga.result(cancelled.order_id)).status is CheckoutStatus.CANCELLED

    for repair in (False, True):
        report = await world.reconcile(repair=repair)
        assert report.findings == [] and report.clean
        assert report.orders_checked == 6


async def test_ended_checkouts_come_from_one_visibility_listing(world):
    """The bulk path: Temporal's listing names ended checkouts, so most orders need no describe call."""
    (sku,) = skus_on_shard(world.store.router, 0, 1)
    await catalog(world.databases, world.store, (sku, 5))
    done = [await confirmed(world, (sku, 1)), order((sku, 1), token="tok_decline")]
    await world.saga.checkout(done[1])
    ids = {checkout.order_id for checkout in done}
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    async with asyncio.timeout(20):
        listed = await _ended_checkouts(world.temporal, cutoff)
        # Visibility is eventually consistent and offers nothing to wait on.
        while not ids <= listed.keys():
            await asyncio.sleep(0.2)
            listed = await _ended_checkouts(world.temporal, cutoff)
    assert {listed[i].status for i in ids} == {"CONFIRMED", "REJECTED"}
    assert {listed[i].state.value for i in ids} == {"COMPLETED"}


async def test_an_order_whose_checkout_runs_is_skipped_until_it_ends(world, temporal_client):
    (sku,) = skus_on_shard(world.store.router, 0, 1)
    await catalog(world.databases, world.store, (sku, 5))
    order_id = await without_checkout(world, sku, 2)
    # A checkout no worker serves: it runs (as far as Temporal knows) and owns the order.
    handle = await temporal_client.start_workflow(
        CheckoutWorkflow.run,
        order((sku, 2), order_id=order_id),
        id=workflow_id_for(order_id),
        task_queue=f"nobody-{uuid.uuid4()}",
    )

    report = await world.reconcile(repair=True)
    assert (report.findings, report.checkouts_running, report.orders_checked) == ([], 1, 0)
    assert await reservation_states(world, order_id) == [("held", False)]

    await handle.terminate(reason="test")
    report = await world.reconcile()
    assert by_order(report) == {order_id: {K.NOT_RELEASED: True, K.ORDER_STATUS: True}}


async def test_since_limits_the_orders_read_but_never_hides_held_stock(world):
    (sku,) = skus_on_shard(world.store.router, 1, 1)
    await catalog(world.databases, world.store, (sku, 5))
    holding = await without_checkout(world, sku, 1)
    old_pending = await without_checkout(world, sku, 1)
    await world.store.release(1, old_pending)
    await sql(world.databases.core, "UPDATE orders SET created_at = now() - interval '3 days'")

    recent = await world.reconcile(since=timedelta(hours=1))
    assert by_order(recent) == {holding: {K.NOT_RELEASED: True, K.ORDER_STATUS: True}}
    everything = await world.reconcile()
    assert set(by_order(everything)) == {holding, old_pending}


async def test_the_scheduled_workflow_reconciles_and_reports_metrics(world):
    """The workflow a Schedule starts, on a worker built by build_worker, with its metrics captured."""
    (sku,) = skus_on_shard(world.store.router, 0, 1)
    await catalog(world.databases, world.store, (sku, 5))
    orphan = await without_checkout(world, sku, 2, row=False)
    buffer = MetricBuffer(10_000)
    client = await connect_configured(
        world.settings,
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
    )
    task_queue = f"test-{uuid.uuid4()}"
    async with (
        WorkerDeps.open(world.settings) as deps,
        build_worker(client, world.settings, deps, task_queue=task_queue),
    ):
        reported: ReconcileSummary = await client.execute_workflow(
            OrderReconcilerWorkflow.run,
            ReconcileInput(),
            id=f"reconcile-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        repaired: ReconcileSummary = await client.execute_workflow(
            OrderReconcilerWorkflow.run,
            ReconcileInput(repair=True),
            id=f"reconcile-{uuid.uuid4()}",
            task_queue=task_queue,
        )
    assert (reported.findings, reported.repaired, reported.needs_person, reported.repair) == (
        {"orphan_holds": 1}, 0, 0, False,
    )  # fmt: skip
    assert (repaired.findings, repaired.repaired, repaired.repair) == ({"orphan_holds": 1}, 1, True)
    assert await reservation_states(world, orphan) == [("released", False)]

    updates = buffer.retrieve_updates()
    gauge = [
        u.value
        for u in updates
        if u.metric.name == "invsaga_reconcile_findings" and u.attributes.get("kind") == "orphan_holds"
    ]
    assert gauge == [1, 1]
    counted = {u.metric.name: u.value for u in updates if u.metric.name.startswith("invsaga_reconcile_re")}
    assert counted == {"invsaga_reconcile_repaired": 1}
    assert {u.metric.name for u in updates} >= {
        "invsaga_reconcile_needs_person",
        "invsaga_reconcile_orders_checked",
        "invsaga_reconcile_checkouts_running",
    }


async def test_the_schedule_is_created_once_skips_overlaps_and_follows_the_setting(temporal_client):
    handle = temporal_client.get_schedule_handle(SCHEDULE_ID)
    with contextlib.suppress(Exception):
        await handle.delete()
    task_queue = f"test-{uuid.uuid4()}"
    try:
        assert await ensure_reconciler_schedule(temporal_client, task_queue, timedelta(seconds=600))
        assert not await ensure_reconciler_schedule(temporal_client, task_queue, timedelta(seconds=600))
        assert await ensure_reconciler_schedule(temporal_client, task_queue, timedelta(seconds=900))
        schedule = (await handle.describe()).schedule
        assert [i.every for i in schedule.spec.intervals] == [timedelta(seconds=900)]
        assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        assert isinstance(schedule.action, ScheduleActionStartWorkflow)
        assert (schedule.action.workflow, schedule.action.task_queue) == (
            "OrderReconcilerWorkflow",
            task_queue,
        )
    finally:
        await handle.delete()


async def test_the_cli_exits_0_when_clean_and_1_while_anything_disagrees(world):
    env = {
        **cli_env(world.settings.shard_dsns, world.settings.core_dsn),
        "INVSAGA_TEMPORAL_ADDRESS": world.settings.temporal_address,
        "INVSAGA_PAYMENT_URL": world.settings.payment_url,
    }

    async def invsaga(*args: str) -> CliResult:
        done = await asyncio.to_thread(
            subprocess.run, [str(INVSAGA), *args], capture_output=True, text=True, timeout=120, env=env
        )
        assert "Traceback" not in done.stderr, done.stderr
        return CliResult(done.returncode, done.stdout, done.stderr)

    (a,) = skus_on_shard(world.store.router, 0, 1)
    (b,) = skus_on_shard(world.store.router, 1, 1)
    await catalog(world.databases, world.store, (a, 5), (b, 5))
    await confirmed(world, (a, 1), (b, 1))

    clean = await invsaga("reconcile", "--json")
    assert clean.code == 0, clean.stderr
    assert (clean.json()["clean"], clean.json()["findings"], clean.json()["orders_checked"]) == (True, [], 1)

    orphan = await without_checkout(world, b, 1, row=False)
    found = await invsaga("reconcile")
    assert found.code == 1
    [line, summary] = found.stdout.strip().splitlines()
    assert line.startswith(f"order {orphan}: orphan_holds:") and "shard 1 held=1" in line
    assert "run with --repair" in line and "1 finding(s)" in summary
    assert (await invsaga("reconcile", "--since", "30m")).code == 1

    repaired = await invsaga("reconcile", "--repair", "--json")
    assert repaired.code == 0, repaired.stdout
    [finding] = repaired.json()["findings"]
    assert (finding["order_id"], finding["kind"], finding["repaired"]) == (orphan, "orphan_holds", True)
    assert (await invsaga("reconcile")).code == 0

    unpaid = await confirmed(world, (a, 1))
    await refund_part(world, unpaid.order_id, 100)
    person = await invsaga("reconcile", "--repair")
    assert person.code == 1 and "needs a person" in person.stdout and unpaid.order_id in person.stdout

    bad = await invsaga("reconcile", "--since", "2 weeks")
    assert bad.code == 2 and bad.error_line.startswith("error: cannot read duration")

    env["INVSAGA_PAYMENT_URL"] = f"http://127.0.0.1:{free_port()}"
    down = await invsaga("reconcile")
    assert down.code == 69 and "payment provider unreachable" in down.error_line
