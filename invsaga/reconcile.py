"""The order reconciler: invariant 5 checked, and its safe half repaired, across the four systems.

An order lives in four places: its row in the core database, its holds on the shards, its checkout in
Temporal and its charge at the payment provider. ``invsaga audit`` checks the stock rows; this checks
that each order's parts agree on one end (``invsaga.domain.reconcile`` holds the rules).

It reads the orders created since a cutoff plus every order with a held line (however old), then, for
each of them, Temporal's view of its checkout and the provider's charge by the order's key, through the
provider's API. Orders whose checkout still runs are skipped: the saga owns them. Everything is read
with plain SELECTs and a bounded number of calls in flight, so it runs against live traffic. Before an
order is reported it is read again: the first read came before Temporal said the checkout was over, and
a checkout that finished in between must not look broken.

With ``repair`` the safe fixes run (each idempotent, each the step the saga itself would have taken);
the rest stay findings for a person.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from invsaga.domain.checkout import workflow_id_for
from invsaga.domain.errors import InventoryError
from invsaga.domain.keys import charge_key
from invsaga.domain.reconcile import (
    ChargeSeen,
    CheckoutSeen,
    CheckoutState,
    Finding,
    FindingKind,
    OrderEvidence,
    OrderRow,
    ShardHolds,
    assess,
)
from invsaga.payments.client import PaymentClient
from invsaga.payments.refunds import refund_what_remains
from invsaga.store.databases import Databases
from invsaga.store.order_evidence import held_order_ids, holds_of, orders_by_id, orders_since
from invsaga.store.orders import advance_order
from invsaga.store.stock import StockStore
from invsaga.temporal.errors import domain_error
from invsaga.temporal.search_attributes import CHECKOUT_STATUS, REJECT_REASON

#: Orders checked at once: each costs a Temporal call and a provider call, and repairs a few more.
CONCURRENCY = 16
#: Temporal's clock and Postgres' can differ; the checkout listing starts this much before the cutoff.
CLOCK_SKEW = timedelta(minutes=5)
_PREFIX = workflow_id_for("")


class ReconcileReport(BaseModel):
    started_at: datetime
    since_seconds: float | None
    repair: bool
    #: Orders whose checkout no longer runs, all of whose parts were compared.
    orders_checked: int
    #: Orders skipped because their checkout still runs.
    checkouts_running: int
    findings: list[Finding]

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def needs_person(self) -> list[Finding]:
        """What a person must look at: fixes that are not safe, and safe fixes that failed."""
        return [f for f in self.findings if f.needs_person]

    def counts(self) -> dict[FindingKind, int]:
        found = Counter(f.kind for f in self.findings)
        return {kind: found[kind] for kind in FindingKind}


async def reconcile(
    databases: Databases,
    temporal: Client,
    payments: PaymentClient,
    *,
    since: timedelta | None = None,
    repair: bool = False,
    store: StockStore | None = None,
    on_progress: Callable[[], None] | None = None,
) -> ReconcileReport:
    """Compare every order created within ``since`` (all when None), and every order holding stock;
    with ``repair``, apply the safe fixes. ``on_progress`` is called after each order (a heartbeat)."""
    started = datetime.now(UTC)
    cutoff = started - since if since is not None else None
    store = store or StockStore(databases)

    def progressed() -> None:
        if on_progress is not None:
            on_progress()

    rows = await orders_since(databases, cutoff)
    held = await held_order_ids(databases)
    rows.update(await orders_by_id(databases, held - rows.keys()))
    candidates = rows.keys() | held
    progressed()
    holds = await holds_of(databases, candidates)
    progressed()
    listed = await _ended_checkouts(temporal, cutoff)
    progressed()
    running = 0
    findings: list[Finding] = []

    async def check(order_id: str) -> None:
        nonlocal running
        checkout = listed.get(order_id)
        if checkout is None:
            checkout = await _describe(temporal, order_id)
        if checkout.state.owned:
            running += 1
            return
        charge = await _charge(payments, order_id)
        found = assess(_evidence(order_id, rows.get(order_id), holds.get(order_id, []), checkout, charge))
        if found:
            fresh_row = (await orders_by_id(databases, [order_id])).get(order_id)
            fresh_holds = (await holds_of(databases, [order_id])).get(order_id, [])
            found = assess(_evidence(order_id, fresh_row, fresh_holds, checkout, charge))
        if repair:
            found = [await _repair(f, databases, store, payments) for f in found]
        findings.extend(found)

    pending = iter(sorted(candidates))

    async def checker() -> None:
        # The iterator is shared, so each order is taken by exactly one checker.
        for order_id in pending:
            await check(order_id)
            progressed()

    # A task group: one unreachable database or service fails the run at once, not once per order,
    # and the caller sees that one error rather than a group of them.
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(checker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    findings.sort(key=lambda f: (f.order_id, list(FindingKind).index(f.kind)))
    return ReconcileReport(
        started_at=started,
        since_seconds=since.total_seconds() if since is not None else None,
        repair=repair,
        orders_checked=len(candidates) - running,
        checkouts_running=running,
        findings=findings,
    )


def _evidence(
    order_id: str,
    row: OrderRow | None,
    holds: list[ShardHolds],
    checkout: CheckoutSeen,
    charge: ChargeSeen | None,
) -> OrderEvidence:
    return OrderEvidence(order_id=order_id, order=row, holds=holds, checkout=checkout, charge=charge)


# --- Temporal --------------------------------------------------------------------------------------


def _temporal_error(err: RPCError) -> Exception:
    return domain_error(err) or err


def _seen(execution: WorkflowExecution) -> CheckoutSeen:
    status = execution.status
    attributes = execution.typed_search_attributes
    return CheckoutSeen(
        # A status the SDK could not name is treated as running: the reconciler leaves such orders alone.
        state=CheckoutState(status.name) if status is not None else CheckoutState.RUNNING,
        status=attributes.get(CHECKOUT_STATUS),
        reason=attributes.get(REJECT_REASON),
    )


async def _ended_checkouts(temporal: Client, cutoff: datetime | None) -> dict[str, CheckoutSeen]:
    """Checkouts that have ended, from one visibility listing instead of one call per order.

    Visibility lags a little, so only what it says has ended is taken from it (an ended workflow
    never runs again under the same id); an order missing here, or listed running, is described.
    """
    query = f'WorkflowId STARTS_WITH "{_PREFIX}"'
    if cutoff is not None:
        query += f' AND StartTime >= "{(cutoff - CLOCK_SKEW).isoformat()}"'
    latest: dict[str, WorkflowExecution] = {}
    try:
        async for execution in temporal.list_workflows(query):
            order_id = execution.id.removeprefix(_PREFIX)
            prior = latest.get(order_id)
            if prior is None or execution.start_time > prior.start_time:
                latest[order_id] = execution
    except RPCError as err:
        raise _temporal_error(err) from err
    seen = {order_id: _seen(execution) for order_id, execution in latest.items()}
    return {order_id: view for order_id, view in seen.items() if not view.state.owned}


async def _describe(temporal: Client, order_id: str) -> CheckoutSeen:
    try:
        description = await temporal.get_workflow_handle(workflow_id_for(order_id)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return CheckoutSeen(state=CheckoutState.NOT_FOUND)
        raise _temporal_error(err) from err
    return _seen(description)


# --- the payment provider ------------------------------------------------------------------------


async def _charge(payments: PaymentClient, order_id: str) -> ChargeSeen | None:
    charge = await payments.find_charge(charge_key(order_id))
    if charge is None:
        return None
    return ChargeSeen(
        id=charge.id, status=charge.status.value, amount=charge.amount, refunded_amount=charge.refunded_amount
    )


# --- repairs -------------------------------------------------------------------------------------


async def _repair(
    finding: Finding, databases: Databases, store: StockStore, payments: PaymentClient
) -> Finding:
    """Apply a safe fix. Each is idempotent: a fix that already happened (by the saga, a person or an
    earlier run) changes nothing, so a repair may race anything."""
    if not finding.safe:
        return finding
    order_id = finding.order_id
    try:
        if finding.kind is FindingKind.UNCOMMITTED:
            for shard in finding.shards:
                await store.commit(shard, order_id)
        elif finding.kind in (FindingKind.NOT_RELEASED, FindingKind.ORPHAN_HOLDS):
            for shard in finding.shards:
                await store.release(shard, order_id)
        elif finding.kind is FindingKind.NOT_REFUNDED:
            await refund_what_remains(payments, order_id)
        elif finding.kind is FindingKind.ORDER_STATUS and finding.status is not None:
            now = await advance_order(databases.core_autocommit, order_id, finding.status, finding.reason)
            if now != finding.status:
                return finding.model_copy(update={"repair_error": f"the order row is already {now}"})
        else:
            return finding.model_copy(update={"repair_error": "no repair for this finding"})
    except InventoryError as exc:
        return finding.model_copy(update={"repair_error": exc.message})
    return finding.model_copy(update={"repaired": True})
