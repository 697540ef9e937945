"""The saga under failure: activities that die after committing, a worker killed mid-saga or right
after it ended an order, holds left by terminated workflows, and cancels that come too late."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text
from temporalio import activity

from activities.inventory import InventoryActivities
from activities.models import CommitInput, ReleaseInput, ReserveInput
from invsaga.client import CheckoutClient
from invsaga.domain.checkout import CheckoutStatus, RejectReason
from invsaga.domain.errors import CancelRefused
from invsaga.domain.stock import ReserveOutcome, TransitionOutcome
from tests.helpers import (
    assert_clean_audit,
    catalog,
    request,
    rows_on_every_shard,
    skus_on_shard,
    stocked_sku,
)
from tests.integration.test_checkout_saga import charges_for, levels, order, order_status
from workers.worker import WorkerDeps, build_worker
from workflows.hold_sweeper import HoldSweeperWorkflow


class LostReplyActivities(InventoryActivities):
    """Each operation commits, then its first attempt dies before answering, as after a crash."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.lost_replies = 0

    def _lose_first_reply(self) -> None:
        if activity.info().attempt == 1:
            self.lost_replies += 1
            raise RuntimeError("connection lost after commit")

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, inp: ReserveInput) -> ReserveOutcome:
        outcome = await super().reserve_stock(inp)
        self._lose_first_reply()
        return outcome

    @activity.defn(name="commit_stock")
    async def commit_stock(self, inp: CommitInput) -> TransitionOutcome:
        outcome = await super().commit_stock(inp)
        self._lose_first_reply()
        return outcome

    @activity.defn(name="release_stock")
    async def release_stock(self, inp: ReleaseInput) -> TransitionOutcome:
        outcome = await super().release_stock(inp)
        self._lose_first_reply()
        return outcome


@pytest.fixture
async def lossy_saga(saga_settings, temporal_client, databases, clean_shards):
    task_queue = f"test-{uuid.uuid4()}"
    async with WorkerDeps.open(saga_settings) as deps:
        inventory = LostReplyActivities(deps.store, deps.batcher)
        worker = build_worker(
            temporal_client, saga_settings, deps, task_queue=task_queue, inventory=inventory
        )
        async with worker:
            yield CheckoutClient(temporal_client, task_queue=task_queue), inventory


async def test_retry_after_a_lost_reply_applies_nothing_twice(lossy_saga, store, databases, payment_sandbox):
    saga, inventory = lossy_saga
    (a,) = skus_on_shard(store.router, 0, 1)
    (b,) = skus_on_shard(store.router, 1, 1)
    await catalog(databases, store, (a, 10), (b, 10))
    confirmed = await saga.checkout(order((a, 2), (b, 1)))
    declined = await saga.checkout(order((a, 3), token="tok_decline"))
    assert confirmed.status is CheckoutStatus.CONFIRMED
    assert declined.status is CheckoutStatus.REJECTED
    # The composite steps run a shard's call beside the other's, and the first lost reply cancels its
    # sibling (which may have committed too): each of place, confirm, place, release loses at least one.
    assert inventory.lost_replies >= 4
    assert await levels(store, a, b) == {a: (8, 0), b: (9, 0)}
    dupes = await rows_on_every_shard(
        databases,
        "SELECT sku, location, reference, reason FROM stock_movements WHERE reason <> 'receive'"
        " GROUP BY sku, location, reference, reason HAVING count(*) > 1",
    )
    assert dupes == []
    await assert_clean_audit(databases)


async def _expire_and_sweep(saga, databases, shard: int):
    """Every hold on ``shard`` past its expiry time, then one run of the sweeper workflow."""
    async with databases.shards[shard].begin() as conn:
        await conn.execute(text("UPDATE reservations SET expires_at = now() - interval '1 second'"))
    return await saga.client.execute_workflow(
        HoldSweeperWorkflow.run, id=f"sweep-{uuid.uuid4()}", task_queue=saga.task_queue
    )


async def test_cancel_after_confirmation_is_refused(saga, store, databases):
    a = await stocked_sku(databases, store, 5)
    request = order((a, 1))
    assert (await saga.checkout(request)).status is CheckoutStatus.CONFIRMED
    with pytest.raises(CancelRefused):
        await saga.cancel(request.order_id)
    assert await levels(store, a) == {a: (4, 0)}


async def test_sweeper_frees_holds_of_a_checkout_terminated_before_it_paid(saga, store, databases):
    a = await stocked_sku(databases, store, 5, shard=1)
    await store.reserve(1, request("abandoned-before-paying", (a, 2)))  # as if its workflow died here
    assert await levels(store, a) == {a: (5, 2)}
    swept = await _expire_and_sweep(saga, databases, shard=1)
    assert swept.expired_per_shard[1] == 1
    assert await levels(store, a) == {a: (5, 0)}
    await assert_clean_audit(databases)


async def test_a_checkout_terminated_after_its_charge_is_finished_by_the_reconciler(
    saga, saga_settings, store, databases, payment_sandbox
):
    """The holds were pinned before the charge, so the sweeper must not free them: the buyer has paid.
    The reconciler sees the checkout is gone and finishes what was sold (commit, order confirmed)."""
    from datetime import timedelta

    from invsaga.payments.client import PaymentClient
    from invsaga.reconcile import reconcile

    a = await stocked_sku(databases, store, 5, shard=1)
    checkout = order((a, 2), token="tok_slow_3000")
    assert (await saga.start(checkout)).held
    await _wait_for(lambda: _charged(payment_sandbox, checkout.order_id))
    await saga.handle(checkout.order_id).terminate("operator pulled the plug")
    swept = await _expire_and_sweep(saga, databases, shard=1)
    assert swept.expired_per_shard[1] == 0
    assert await levels(store, a) == {a: (5, 2)}

    async with PaymentClient(saga_settings.payment_url, timeout=5) as payments:
        report = await reconcile(
            databases, saga.client, payments, since=timedelta(minutes=5), repair=True, store=store
        )
    mine = {f.kind.value: f.repaired for f in report.findings if f.order_id == checkout.order_id}
    assert mine == {"uncommitted": True, "order_status": True}, report.findings
    assert await levels(store, a) == {a: (3, 0)}
    [charge] = await charges_for(payment_sandbox, checkout.order_id)
    assert (charge["status"], charge["refunded_amount"]) == ("succeeded", 0)
    assert await order_status(databases, checkout.order_id) == "confirmed"
    await assert_clean_audit(databases)


async def _charged(payment_sandbox, order_id: str) -> bool:
    return bool(await charges_for(payment_sandbox, order_id))


def _worker_process(
    settings, task_queue: str, module: tuple[str, ...] = ("invsaga", "worker")
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "INVSAGA_SHARD_DSNS": ",".join(settings.shard_dsns),
        "INVSAGA_CORE_DSN": settings.core_dsn,
        "INVSAGA_TEMPORAL_ADDRESS": settings.temporal_address,
        "INVSAGA_TASK_QUEUE": task_queue,
        "INVSAGA_PAYMENT_URL": settings.payment_url,
        "INVSAGA_PAYMENT_TIMEOUT_SECONDS": "1",
    }
    return subprocess.Popen([sys.executable, "-m", *module], env=env)


async def _wait_for(predicate, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def test_worker_killed_mid_saga_is_finished_by_a_fresh_worker(
    saga_settings, temporal_client, store, databases, payment_sandbox, clean_shards
):
    a = await stocked_sku(databases, store, 20)
    task_queue = f"test-kill-{uuid.uuid4()}"
    client = CheckoutClient(temporal_client, task_queue=task_queue)
    requests = [order((a, 1), token="tok_slow_700") for _ in range(6)]
    first = _worker_process(saga_settings, task_queue)
    try:
        for request in requests:
            await client.start_without_waiting(request)

        async def all_paying() -> bool:
            views = await asyncio.gather(*(client.status(r.order_id) for r in requests))
            return all(v.status is CheckoutStatus.PAYING for v in views)

        await _wait_for(all_paying)
        assert (await levels(store, a))[a] == (20, 6)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = _worker_process(saga_settings, task_queue)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.result(r.order_id) for r in requests)), timeout=120
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    assert [r.status for r in results] == [CheckoutStatus.CONFIRMED] * 6
    for request, result in zip(requests, results, strict=True):
        [charge] = await charges_for(payment_sandbox, request.order_id)
        assert charge["id"] == result.charge_id
    assert await levels(store, a) == {a: (14, 0)}
    await assert_clean_audit(databases)


async def order_reason(databases, order_id: str) -> str | None:
    async with databases.core.connect() as conn:
        return await conn.scalar(text("SELECT reason FROM orders WHERE order_id = :id"), {"id": order_id})


async def _ended_by_a_lost_task(saga_settings, temporal_client, checkout, *, cancel: bool = False):
    """Run ``checkout`` on a worker that dies once the order's end is recorded, before its workflow
    task completes; then a fresh worker runs that task again, and its result is returned."""
    task_queue = f"test-lost-task-{uuid.uuid4()}"
    client = CheckoutClient(temporal_client, task_queue=task_queue)
    await client.start_without_waiting(checkout)
    # Sent before any worker polls, so the first workflow task takes the cancel with the start.
    cancelling = asyncio.ensure_future(client.cancel(checkout.order_id)) if cancel else None
    dying = _worker_process(saga_settings, task_queue, ("tests.integration.dying_worker",))
    assert await asyncio.to_thread(dying.wait, 60) == -signal.SIGKILL
    async with (
        WorkerDeps.open(saga_settings) as deps,
        build_worker(temporal_client, saga_settings, deps, task_queue=task_queue),
    ):
        result = await asyncio.wait_for(client.result(checkout.order_id), timeout=60)
        if cancelling is not None:
            assert (await asyncio.wait_for(cancelling, timeout=60)).accepted
    return result


async def test_an_out_of_stock_order_whose_ending_task_was_lost_ends_out_of_stock_as_recorded(
    saga_settings, temporal_client, store, databases, payment_sandbox, clean_shards
):
    """The re-run's reserve replays the release the lost task made, and must not read it as a hold
    lost: it ends the order as the lost task recorded it, with the same short lines."""
    a = await stocked_sku(databases, store, 1)
    checkout = order((a, 2))
    result = await _ended_by_a_lost_task(saga_settings, temporal_client, checkout)
    assert (result.status, result.reason) == (CheckoutStatus.REJECTED, RejectReason.OUT_OF_STOCK)
    assert [(s.sku, s.requested, s.available) for s in result.shortages] == [(a, 2, 1)]
    assert await order_status(databases, checkout.order_id) == "rejected"
    assert await order_reason(databases, checkout.order_id) == "out_of_stock"
    assert await levels(store, a) == {a: (1, 0)}
    assert await charges_for(payment_sandbox, checkout.order_id) == []
    await assert_clean_audit(databases)


async def test_a_cancel_taken_in_a_lost_task_ends_the_order_cancelled_as_recorded(
    saga_settings, temporal_client, store, databases, payment_sandbox, clean_shards
):
    a = await stocked_sku(databases, store, 5)
    checkout = order((a, 2))
    result = await _ended_by_a_lost_task(saga_settings, temporal_client, checkout, cancel=True)
    assert result.status is CheckoutStatus.CANCELLED
    assert await order_status(databases, checkout.order_id) == "cancelled"
    assert await levels(store, a) == {a: (5, 0)}
    assert await charges_for(payment_sandbox, checkout.order_id) == []
    await assert_clean_audit(databases)
