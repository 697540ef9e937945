"""Issue 13's resharding test at CI size: 2 shards full of 100,000 SKUs grow to 3 while checkouts and
receipts run, and the mover is killed (SIGKILL) mid-copy and again mid-catch-up, and resumed each time.

Everything is real and this module's own: three Postgres shard servers and a core server (only the
first two shards listed in INVSAGA_SHARD_DSNS), a payment sandbox on the core server, and a worker on
its own task queue of the session's Temporal dev server, whose ``Databases`` watch the registry as a
deployed worker's do. The operator's steps are the commands, run as processes: ``invsaga shards add``,
then ``invsaga shards rebalance``, killed once a move has copied SKUs and once a move is catching up
(its catch-up widened with ``--catch-up-rounds``/``--round-pause`` so the kill lands inside it), and
run again each time until the shards are balanced.

The scenario runs once (the module fixture); each test then checks one thing that must hold after it:
every checkout that started ended right (invariant 5 against the sandbox's ledger, with the fault
suite's own SQL, ``tests/faults/invariants.py``), the audit and the reconciler find nothing, every
unit is conserved per SKU, no SKU lives on two shards, the map is balanced and no move is left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from invsaga.client import CheckoutClient
from invsaga.dev.payments.server import SandboxServer
from invsaga.dev.postgres import PgFleet, PgServer
from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus, RejectReason
from invsaga.domain.errors import ShardUnavailable
from invsaga.payments.client import PaymentClient
from invsaga.reconcile import reconcile
from invsaga.settings import Settings, load_settings
from invsaga.store.audit import audit
from invsaga.store.bulk_import import import_stock
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.routing import SLOT_COUNT, read_router, slot_of
from invsaga.store.slot_ownership import OWNED_LEDGER, OWNED_STOCK
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured
from tests.faults.harness import Outcome
from tests.faults.invariants import (
    order_violations,
    payment_violations,
    stock_violations,
    temporal_violations,
)
from workers.worker import WorkerDeps, build_worker

pytestmark = pytest.mark.timeout(300)

INVSAGA = Path(sys.executable).with_name("invsaga")

#: The catalog the two shards start with, as issue 13 asks.
SKUS = 100_000
FILL_UNITS = 7
#: The SKUs the checkouts buy: every TRAFFIC_STEP-th of them, so they spread over the slots.
TRAFFIC_STEP = 333
TRAFFIC_UNITS = 40
#: A few SKUs most orders want: they sell out, and the receipts bring them back.
HOT = 4
HOT_UNITS = 3
PRICE_MINOR = 250
BUYERS = 6
#: A start that gets no stock decision is retried with the same order for this long.
START_BUDGET = 60.0
#: How long a buyer waits for its checkout's end, and every started checkout gets to end once the
#: traffic stops: a checkout stuck on a step fails the run well inside its budget, saying where.
RESULT_SECONDS = 30.0
SETTLE_SECONDS = 60.0
#: The slot map once 4096 slots are shared by three shards.
BALANCED = [1365, 1365, 1366]

_NO_DECISION = (RPCError, TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, ShardUnavailable)


def _sku(n: int) -> str:
    return f"RS-{n:06d}"


# --- the orders and receipts ------------------------------------------------------------------


@dataclass
class Placed:
    """One order the traffic started, with what the test itself knows of it."""

    order_id: str
    lines: list[tuple[str, int]]
    token: str
    amount_minor: int
    started_at: float
    attempts: int = 0
    decision: str = "none yet"
    #: Seconds from the first attempt to the stock decision, and to the result.
    decided_in: float | None = None
    ended_in: float | None = None

    def request(self) -> CheckoutRequest:
        return CheckoutRequest(
            order_id=self.order_id,
            customer_id="reshard",
            lines=[CheckoutLine(sku=sku, quantity=qty) for sku, qty in self.lines],
            payment_token=self.token,
        )


class Traffic:
    """Buyers and a stock clerk running against the deployment until told to stop: every order started
    and every unit received is recorded, for the checks after."""

    def __init__(self, client: CheckoutClient, store: StockStore, skus: list[str], prefix: str) -> None:
        self.client, self.store, self.skus, self.prefix = client, store, skus, prefix
        self.hot = skus[:HOT]
        self.stop = asyncio.Event()
        self.orders: list[Placed] = []
        self.received: Counter[str] = Counter()
        self.errors: list[str] = []
        self.retries = 0

    def _pick(self, rng: random.Random) -> str:
        return rng.choice(self.hot) if rng.random() < 0.4 else rng.choice(self.skus)

    def _plan(self, rng: random.Random) -> Placed:
        wanted = 1 if rng.random() < 0.6 else rng.randint(2, 4)
        skus: list[str] = []
        while len(skus) < wanted:
            sku = self._pick(rng)
            if sku not in skus:
                skus.append(sku)
        lines = [(sku, rng.randint(1, 2)) for sku in skus]
        roll = rng.random()
        token = "tok_success" if roll < 0.78 else "tok_decline" if roll < 0.92 else "tok_flaky_1"
        amount = PRICE_MINOR * sum(qty for _, qty in lines)
        order_id = f"{self.prefix}-{len(self.orders)}"
        return Placed(order_id, lines, token, amount, time.monotonic())

    async def buyer(self, index: int) -> None:
        """Closed loop: start an order, wait for its end, start the next."""
        rng = random.Random(f"buyer-{index}")
        while not self.stop.is_set():
            order = self._plan(rng)
            self.orders.append(order)  # recorded before its first attempt: it is checked however it goes
            if not await self._start(order):
                return
            try:
                await asyncio.wait_for(self.client.result(order.order_id), timeout=RESULT_SECONDS)
            except Exception as exc:  # the settle step below asks again, bounded
                self.errors.append(
                    f"{order.order_id}: no result in {RESULT_SECONDS:.0f} s ({type(exc).__name__})"
                )
                return
            order.ended_in = time.monotonic() - order.started_at

    async def _start(self, order: Placed) -> bool:
        deadline = time.monotonic() + START_BUDGET
        while True:
            order.attempts += 1
            try:
                view = await asyncio.wait_for(self.client.start(order.request()), timeout=30)
            except _NO_DECISION as exc:
                self.retries += 1
                if time.monotonic() > deadline:
                    self.errors.append(f"{order.order_id}: no stock decision: {type(exc).__name__}: {exc}")
                    return False
                await asyncio.sleep(0.2)
                continue
            except Exception as exc:
                self.errors.append(f"{order.order_id}: start failed: {type(exc).__name__}: {exc}")
                return False
            order.decision = "held" if view.held else f"refused {view.reason}"
            order.decided_in = time.monotonic() - order.started_at
            return True

    async def clerk(self) -> None:
        """Receipts of a few units at a time, the hot SKUs most often; a refusal is retried with the
        same key, so each receipt counts once however often it is sent."""
        rng = random.Random("clerk")
        n = 0
        while not self.stop.is_set():
            n += 1
            sku = rng.choice(self.hot) if rng.random() < 0.3 else rng.choice(self.skus)
            quantity = rng.randint(1, 3)
            key = f"{self.prefix}-receipt-{n}"
            deadline = time.monotonic() + START_BUDGET
            while True:
                try:
                    await self.store.receive(sku, "main", quantity, idempotency_key=key)
                except ShardUnavailable as exc:
                    self.retries += 1
                    if time.monotonic() > deadline:
                        self.errors.append(f"receipt {key} of {sku}: {exc}")
                        return
                    await asyncio.sleep(0.2)
                    continue
                self.received[sku] += quantity
                break
            await asyncio.sleep(rng.uniform(0.1, 0.3))


# --- the operator's commands --------------------------------------------------------------------


@dataclass
class Kill:
    """One rebalance killed with SIGKILL: the move it was in and what that move had recorded."""

    move_id: int
    phase: str
    skus_copied: int
    exit_code: int
    output: str


_MOVES = text("SELECT move_id, phase, skus_copied, fence_ms, slots FROM slot_moves ORDER BY move_id")


async def _slot_moves(databases: Databases) -> list[Any]:
    async with databases.core.connect() as conn:
        return list((await conn.execute(_MOVES)).all())


@dataclass
class Ran:
    code: int
    output: str


async def _invsaga(env: dict[str, str], *args: str, within: float = 60) -> Ran:
    """``invsaga ARGS`` as its own process, stdout and stderr together."""
    process = await asyncio.create_subprocess_exec(
        str(INVSAGA), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), within)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(process.returncode, output.decode())


async def _rebalance_killed_at(databases: Databases, env: dict[str, str], wanted: str, *options: str) -> Kill:
    """Run ``invsaga shards rebalance`` as a process and SIGKILL it as soon as a move is recorded in
    phase ``wanted`` (``copying``: with SKUs copied already), polling ``slot_moves`` every 10 ms."""
    process = await asyncio.create_subprocess_exec(
        str(INVSAGA),
        "shards",
        "rebalance",
        *options,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = asyncio.create_task(process.stdout.read())
    try:
        while process.returncode is None:
            for move in await _slot_moves(databases):
                if move.phase == wanted and (wanted != "copying" or move.skus_copied > 0):
                    process.send_signal(signal.SIGKILL)
                    code = await process.wait()
                    printed = (await output).decode()
                    return Kill(move.move_id, move.phase, move.skus_copied, code, printed)
            await asyncio.sleep(0.01)  # the returncode is set as the process exits
        printed = (await output).decode()
        raise AssertionError(
            f"the rebalance ended (exit {process.returncode}) before a move was {wanted}:\n{printed}"
        )
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        output.cancel()


# --- the scenario -----------------------------------------------------------------------------------


@dataclass
class Resharded:
    """What the scenario did and left behind, for the checks."""

    fleet: PgFleet
    settings: Settings
    databases: Databases
    temporal: Client
    payments_url: str
    payments_dsn: str
    prefix: str
    skus: list[str]
    traffic: list[str]
    received: dict[str, int]
    orders: list[Placed]
    outcomes: dict[str, Outcome]
    slots_before: list[int]
    kills: list[Kill]
    final_output: str
    traffic_errors: list[str]
    timeline: dict[str, float] = field(default_factory=dict)


@dataclass
class _Stack:
    """The parts of the fault suite's stack that ``tests/faults/invariants.py`` reads."""

    shard_servers: list[PgServer]
    core_dsn: str
    payments_url: str
    payments_dsn: str


@dataclass
class _Checked:
    """The parts of a fault ``Scenario`` that ``tests/faults/invariants.py`` reads: this run's orders,
    what the test put in per SKU, and where each SKU must live now."""

    stack: _Stack
    orders: list[Placed]
    prefix: str
    received: dict[str, int]
    skus: dict[str, int]
    temporal: Client


async def _fill(databases: Databases, skus: list[str], traffic: list[str]) -> dict[str, int]:
    """The catalog's products the checkouts buy, and every SKU's stock by one bulk import."""
    units = dict.fromkeys(skus, FILL_UNITS)
    units.update(dict.fromkeys(traffic, TRAFFIC_UNITS))
    units.update(dict.fromkeys(traffic[:HOT], HOT_UNITS))
    price = Decimal(PRICE_MINOR) / 100
    await upsert_products(databases.core, [Product(sku=s, name=f"item {s}", price=price) for s in traffic])
    lines = ["sku,location,quantity", *(f"{sku},main,{n}" for sku, n in units.items())]
    result = await import_stock(databases, lines)
    assert result.applied == len(skus) and not result.rejected
    return units


async def _settle(client: CheckoutClient, databases: Databases, orders: list[Placed]) -> dict[str, Outcome]:
    """Wait, bounded, until every started checkout has ended; then read how each one ended."""
    deadline = time.monotonic() + SETTLE_SECONDS
    status: dict[str, WorkflowExecutionStatus | None] = {}
    gate = asyncio.Semaphore(16)

    async def look(order_id: str) -> None:
        async with gate:
            try:
                status[order_id] = (await client.describe(order_id)).status
            except Exception:
                status[order_id] = None

    while True:
        unsure = [
            o.order_id for o in orders if status.get(o.order_id) in (None, WorkflowExecutionStatus.RUNNING)
        ]
        await asyncio.gather(*(look(order_id) for order_id in unsure))
        running = [o for o in orders if status.get(o.order_id) is WorkflowExecutionStatus.RUNNING]
        if not running:
            break
        if time.monotonic() > deadline:
            stuck = "\n".join([await _stuck(client, databases, order) for order in running[:5]])
            # The run has failed: end them, so the worker need not wait for their steps to stop.
            for order in running:
                with contextlib.suppress(Exception):
                    await client.handle(order.order_id).terminate(reason="test_reshard_live: stuck")
            raise AssertionError(
                f"{len(running)} checkouts still running {SETTLE_SECONDS:.0f} s after the traffic stopped:"
                f"\n{stuck}"
            )
        await asyncio.sleep(0.5)
    outcomes: dict[str, Outcome] = {}
    for order in orders:
        outcome = Outcome(order.order_id, status.get(order.order_id))
        if outcome.workflow_status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED):
            outcome.result = await client.result(order.order_id)
        outcomes[order.order_id] = outcome
    return outcomes


async def _stuck(client: CheckoutClient, databases: Databases, order: Placed) -> str:
    """Where a checkout that does not end stands: its live state, its lines' slots and owners, and its
    holds on every shard."""
    try:
        view = await asyncio.wait_for(client.status(order.order_id), timeout=3)
        live = f"{view.status.value}, attention: {view.attention}"
    except Exception as exc:
        live = f"no answer to the status query ({type(exc).__name__})"
    owner = databases.router.slots
    lines = [(sku, qty, slot_of(sku), owner[slot_of(sku)]) for sku, qty in order.lines]
    holds = []
    for index in databases.serving():
        async with databases.shards[index].connect() as conn:
            rows = await conn.execute(
                text("SELECT sku, quantity, state FROM reservations WHERE order_id = :o"),
                {"o": order.order_id},
            )
            holds += [f"shard {index}: {r.sku} x{r.quantity} {r.state}" for r in rows]
    return f"  {order.order_id}: {live}; lines (sku, qty, slot, owner) {lines}; holds {holds or 'none'}"


@pytest.fixture(scope="module")
async def resharded(three_servers: PgFleet, temporal_server: Any) -> AsyncIterator[Resharded]:
    fleet = three_servers
    assert fleet.core is not None
    started = time.monotonic()
    timeline: dict[str, float] = {}

    def mark(what: str) -> None:
        timeline[what] = round(time.monotonic() - started, 1)

    listed = fleet.shard_dsns[:2]
    payments_dsn = await asyncio.to_thread(fleet.core.create_database, "payments")
    async with SandboxServer(payments_dsn) as sandbox:
        settings = load_settings(
            shard_dsns=",".join(listed),
            core_dsn=fleet.core_dsn,
            pool_size=20,
            temporal_address=temporal_server.address,
            payment_url=sandbox.url,
            payment_timeout_seconds=1.0,
            worker_shutdown_grace_seconds=5.0,
        )
        await migrate_all(settings)
        databases = await Databases.open(settings, watch=True)
        try:
            skus = [_sku(n) for n in range(SKUS)]
            traffic_skus = skus[::TRAFFIC_STEP]
            imported = await _fill(databases, skus, traffic_skus)
            mark("filled")
            slots_before = (await read_router(databases.core)).slots

            temporal = await connect_configured(settings)
            prefix = f"rs{uuid.uuid4().hex[:8]}"
            task_queue = f"reshard-{prefix}"
            env = {key: value for key, value in os.environ.items() if not key.startswith("INVSAGA_")}
            env |= {
                "INVSAGA_SHARD_DSNS": ",".join(listed),
                "INVSAGA_CORE_DSN": fleet.core_dsn,
                "INVSAGA_TEMPORAL_ADDRESS": settings.temporal_address,
            }
            async with (
                WorkerDeps.open(settings) as deps,
                build_worker(temporal, settings, deps, task_queue=task_queue),
            ):
                client = CheckoutClient(temporal, task_queue=task_queue)
                traffic = Traffic(client, StockStore(databases), traffic_skus, prefix)
                running = [asyncio.create_task(traffic.buyer(i)) for i in range(BUYERS)]
                running.append(asyncio.create_task(traffic.clerk()))
                try:
                    await asyncio.sleep(2)  # checkouts in flight before anything moves
                    mark("traffic running")
                    added = await _invsaga(env, "shards", "add", fleet.shard_dsns[2])
                    assert added.code == 0, added.output
                    mark("third shard added")
                    kills = [await _rebalance_killed_at(databases, env, "copying", "--batch-rows", "20")]
                    mark("killed mid-copy")
                    kills.append(
                        await _rebalance_killed_at(
                            databases, env, "catching_up", "--catch-up-rounds", "60", "--round-pause", "0.05"
                        )
                    )
                    mark("killed mid-catch-up")
                    final = await _invsaga(env, "shards", "rebalance", within=150)
                    assert final.code == 0, final.output
                    mark("rebalanced")
                    await asyncio.sleep(1)  # checkouts on the new map, too
                finally:
                    traffic.stop.set()
                    await asyncio.wait_for(asyncio.gather(*running), timeout=120)
                mark("traffic stopped")
                outcomes = await _settle(client, databases, traffic.orders)
                mark("every checkout ended")
            received = {sku: imported[sku] + traffic.received[sku] for sku in skus}
            yield Resharded(
                fleet=fleet,
                settings=settings,
                databases=databases,
                temporal=temporal,
                payments_url=sandbox.url,
                payments_dsn=payments_dsn,
                prefix=prefix,
                skus=skus,
                traffic=traffic_skus,
                received=received,
                orders=traffic.orders,
                outcomes=outcomes,
                slots_before=slots_before,
                kills=kills,
                final_output=final.output,
                traffic_errors=traffic.errors,
                timeline=timeline,
            )
        finally:
            await databases.close()


def _checked(r: Resharded) -> _Checked:
    stack = _Stack(r.fleet.shards, r.fleet.core_dsn, r.payments_url, r.payments_dsn)
    router = r.databases.router
    return _Checked(
        stack, r.orders, r.prefix, r.received, {s: router.shard_of(s) for s in r.skus}, r.temporal
    )


_SOLD_OUT = (CheckoutStatus.REJECTED, RejectReason.OUT_OF_STOCK)
#: How an order may end, by its payment token.
_RIGHT_ENDS = {
    "tok_success": {(CheckoutStatus.CONFIRMED, None), _SOLD_OUT},
    "tok_flaky_1": {(CheckoutStatus.CONFIRMED, None), _SOLD_OUT},
    "tok_decline": {(CheckoutStatus.REJECTED, RejectReason.PAYMENT_DECLINED), _SOLD_OUT},
}
#: Ends the traffic does not aim at: each is printed with its detail.
_UNUSUAL = (
    RejectReason.HOLD_LOST,
    RejectReason.UNAVAILABLE,
    RejectReason.INVALID,
    RejectReason.PAYMENT_TIMEOUT,
)


def _print_summary(r: Resharded) -> None:
    """What the run looked like, for a post-mortem of a slow or failed run (pytest -s shows it)."""
    print(f"\ntimeline (s): {r.timeline}")
    ended = Counter(
        f"{o.result.status.value} {o.result.reason or ''}".strip() for o in r.outcomes.values() if o.result
    )
    print(f"{len(r.orders)} checkouts: {dict(ended)}")
    unusual = [o.result for o in r.outcomes.values() if o.result and o.result.reason in _UNUSUAL]
    for result in unusual:
        print(f"  {result.order_id} {result.status.value} {result.reason}: {result.detail}")
    for kill in r.kills:
        print(f"killed in {kill.phase} (move {kill.move_id}, {kill.skus_copied} SKUs copied):\n{kill.output}")
    print(f"the last rebalance:\n{r.final_output}")
    slowest = sorted((o for o in r.orders if o.ended_in), key=lambda o: -(o.ended_in or 0))[:5]
    for o in slowest:
        print(f"  slow: {o.order_id} decided in {o.decided_in:.2f} s, ended in {o.ended_in:.2f} s, {o.lines}")


# --- the checks -----------------------------------------------------------------------------------


async def test_the_mover_was_killed_mid_copy_and_mid_catch_up_and_resumed(resharded: Resharded) -> None:
    r = resharded
    _print_summary(r)
    mid_copy, mid_catch_up = r.kills
    assert (mid_copy.phase, mid_catch_up.phase) == ("copying", "catching_up")
    assert mid_copy.skus_copied > 0
    assert mid_copy.exit_code == mid_catch_up.exit_code == -signal.SIGKILL
    # Each run after a kill took the killed move on from its recorded phase.
    assert f"move {mid_copy.move_id}: resuming from phase copying" in mid_catch_up.output
    assert f"move {mid_catch_up.move_id}: resuming from phase catching_up" in r.final_output
    assert f"move {mid_catch_up.move_id} done" in r.final_output
    assert r.final_output.splitlines()[-1].startswith("moved ") and "; balanced:" in r.final_output


async def test_every_started_checkout_ended_right(resharded: Resharded) -> None:
    r = resharded
    assert r.traffic_errors == []
    checked = _checked(r)
    violations = await order_violations(checked, r.outcomes)  # type: ignore[arg-type]
    violations += await payment_violations(checked)  # type: ignore[arg-type]
    violations += await temporal_violations(checked)  # type: ignore[arg-type]
    assert violations == [], violations[:20]
    ended = Counter((o.result.status, o.result.reason) for o in r.outcomes.values() if o.result is not None)
    assert sum(ended.values()) == len(r.orders)
    # Every order is valid, every shard stays up and no hold can expire (the TTL is far off): each
    # order ends as its stock and its token say, whatever moved under it.
    wrong = [
        f"{o.order_id} ({o.token}): {result.status.value} {result.reason}: {result.detail}"
        for o in r.orders
        if (result := r.outcomes[o.order_id].result) is not None
        and (result.status, result.reason) not in _RIGHT_ENDS[o.token]
    ]
    assert wrong == [], wrong
    # The traffic was the mix it means to be: sales, declines, and hot SKUs that ran out.
    assert ended[(CheckoutStatus.CONFIRMED, None)] >= 20, ended
    assert ended[(CheckoutStatus.REJECTED, RejectReason.PAYMENT_DECLINED)] >= 1, ended
    assert ended[(CheckoutStatus.REJECTED, RejectReason.OUT_OF_STOCK)] >= 1, ended
    # And it bought what moved, while it moved.
    moved = {slot for slot, owner in enumerate(r.databases.router.slots) if owner != r.slots_before[slot]}
    touched = [o for o in r.orders if any(slot_of(sku) in moved for sku, _ in o.lines)]
    assert len(touched) >= 10, f"only {len(touched)} of {len(r.orders)} orders touched a moved slot"


async def test_audit_and_reconciler_are_clean(resharded: Resharded) -> None:
    r = resharded
    report = await audit(r.databases)
    assert report.clean, report.violations[:5]
    payments = PaymentClient(r.payments_url, timeout=5)
    try:
        found = await reconcile(r.databases, r.temporal, payments)
    finally:
        await payments.aclose()
    assert found.clean, found.findings[:5]
    confirmed = [o for o in r.outcomes.values() if o.result and o.result.status is CheckoutStatus.CONFIRMED]
    assert found.checkouts_running == 0 and found.orders_checked >= len(confirmed) > 0


async def test_every_unit_is_conserved_per_sku_across_shards(resharded: Resharded) -> None:
    """received = on_hand + sold for every SKU, summed over the shards that own it, and what was
    received is what the test put in: the import plus every receipt."""
    r = resharded
    totals: dict[str, list[int]] = {}
    for index in r.databases.serving():
        async with r.databases.shards[index].connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT s.sku, s.on_hand, coalesce(m.received, 0), coalesce(m.sold, 0)"
                    f" FROM {OWNED_STOCK} s LEFT JOIN (SELECT sku, location, sum(delta_on_hand)"
                    "   FILTER (WHERE reason IN ('import', 'receive', 'adjust')) AS received,"
                    "   -sum(delta_on_hand) FILTER (WHERE reason = 'commit') AS sold"
                    f"  FROM {OWNED_LEDGER} l GROUP BY sku, location) m USING (sku, location)"
                )
            )
            for sku, on_hand, received, sold in rows:
                total = totals.setdefault(sku, [0, 0, 0])
                total[0] += received
                total[1] += on_hand
                total[2] += sold
    assert set(totals) == set(r.skus)
    unbalanced = {sku: t for sku, t in totals.items() if t[0] != t[1] + t[2]}
    assert unbalanced == {}, list(unbalanced.items())[:10]
    misreceived = {sku: (t[0], r.received[sku]) for sku, t in totals.items() if t[0] != r.received[sku]}
    assert misreceived == {}, list(misreceived.items())[:10]
    assert sum(t[2] for t in totals.values()) > 0
    # The same, and invariants 1-4 and 6 row by row, with the fault suite's own SQL on the raw tables.
    violations = await stock_violations(_checked(r))  # type: ignore[arg-type]
    assert violations == [], violations[:20]


async def test_no_sku_is_on_two_shards_and_the_sources_kept_nothing(resharded: Resharded) -> None:
    r = resharded
    owner = r.databases.router.slots
    owned_by: dict[str, list[int]] = {}
    for index in r.databases.serving():
        async with r.databases.shards[index].connect() as conn:
            for sku in (await conn.execute(text(f"SELECT DISTINCT sku FROM {OWNED_STOCK} s"))).scalars():
                owned_by.setdefault(sku, []).append(index)
            # Every row a shard keeps, in every table, is of a slot it owns: the moves deleted the rest.
            for table in ("stock_levels", "reservations", "stock_movements"):
                rows = await conn.execute(text(f"SELECT DISTINCT sku FROM {table}"))
                strays = [sku for sku in rows.scalars() if owner[slot_of(sku)] != index]
                assert strays == [], f"shard {index} keeps {table} rows of {len(strays)} SKUs: {strays[:5]}"
            fences = await conn.scalar(
                text("SELECT count(*) FROM slot_fences WHERE state IN ('copying', 'fenced', 'importing')")
            )
            assert fences == 0, f"shard {index} still fences or imports {fences} slot(s)"
            assert await conn.scalar(text("SELECT count(*) FROM slot_move_changes")) == 0
    assert {sku: shards for sku, shards in owned_by.items() if len(shards) > 1} == {}
    assert len(owned_by) == len(r.skus)
    assert all(shards == [owner[slot_of(sku)]] for sku, shards in owned_by.items())


async def test_the_slot_map_is_balanced_and_no_move_is_open(resharded: Resharded) -> None:
    r = resharded
    router = await read_router(r.databases.core)
    assert len(router.slots) == SLOT_COUNT
    assert sorted(Counter(router.slots).values()) == BALANCED
    assert router.slots == r.databases.router.slots  # the watching process followed every flip
    moves = await _slot_moves(r.databases)
    assert moves and {m.phase for m in moves} == {"done"}
    moved = sorted(slot for m in moves for slot in m.slots)
    assert len(moved) == len(set(moved)) == BALANCED[0]  # every slot moved once, none twice
    assert all(m.fence_ms is not None and m.fence_ms >= 0 for m in moves)
    print(f"\nfence ms per move: {[round(m.fence_ms, 1) for m in moves]}")
