"""One fault scenario: its seed, its stock, its worker and API processes, its orders and faults, and the
report it leaves behind.

A scenario draws everything random (SKUs' stock and prices, the orders, their tokens and arrival
times, which process to kill and when) from one ``random.Random(seed)``. It drives checkouts while its
faults run, waits until every checkout has ended, then checks every invariant with its own SQL
(``tests/faults/invariants.py``) and runs ``invsaga reconcile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port
from invsaga.domain.checkout import (
    CheckoutLine,
    CheckoutRequest,
    CheckoutResult,
    CheckoutStatus,
    workflow_id_for,
)
from invsaga.domain.errors import ShardUnavailable
from invsaga.settings import Settings
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured
from tests.faults.stack import (
    ADMIN_AUTH,
    CHECKOUT_AUTH,
    SWEEP_EVERY,
    Child,
    FaultStack,
    Scale,
    wait_http_ok,
)
from workers.schedules import ensure_sweeper_schedule
from workflows.hold_sweeper import SCHEDULE_ID

#: What a start can end in without a stock decision; the caller retries the same order.
_NO_DECISION = (RPCError, TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, ShardUnavailable)

#: Every scenario's report, printed at the end of the pytest run (see conftest.py).
REPORTS: list[dict[str, Any]] = []


def seed_for(name: str) -> int:
    """``INVSAGA_FAULT_SEED`` when set (rerun a reported seed with it), else a fixed seed per scenario."""
    given = os.environ.get("INVSAGA_FAULT_SEED", "").strip()
    if given:
        return int(given)
    return zlib.crc32(name.encode()) % 1_000_000


@dataclass(frozen=True)
class Knobs:
    """Per-scenario settings of its worker and API processes."""

    payment_timeout_seconds: float = 1.0
    payment_deadline_seconds: int = 30
    hold_ttl_seconds: int = 120
    workers: int = 2
    api: bool = True
    #: Scenarios with the same knobs and ``shared`` use one task queue and its processes, started once
    #: (the ones a scenario kills are replaced), which spares each scenario their start-up.
    shared: bool = False


class Processes:
    """The workers and the API serving one task queue, all started with the same settings."""

    def __init__(self, stack: FaultStack, tag: str, knobs: Knobs) -> None:
        self.stack = stack
        self.knobs = knobs
        self.tag = tag
        self.task_queue = f"faults-{tag}"
        self.env = stack.base_env(
            INVSAGA_TASK_QUEUE=self.task_queue,
            INVSAGA_PAYMENT_TIMEOUT_SECONDS=str(knobs.payment_timeout_seconds),
            INVSAGA_CHECKOUT_PAYMENT_DEADLINE_SECONDS=str(knobs.payment_deadline_seconds),
            INVSAGA_HOLD_TTL_SECONDS=str(knobs.hold_ttl_seconds),
            INVSAGA_WORKER_SHUTDOWN_GRACE_SECONDS="5",
        )
        self.workers: list[Child] = []
        self.api: Child | None = None
        self.api_port = free_port()
        self.worker_count = 0

    def spawn_worker(self) -> Child:
        self.worker_count += 1
        port = free_port()
        child = self.stack.child(
            f"{self.tag}-worker-{self.worker_count}",
            ["worker"],
            {**self.env, "INVSAGA_WORKER_HEALTH_PORT": str(port)},
        )
        child.health_url = f"http://127.0.0.1:{port}/healthz"
        child.start()
        self.workers.append(child)
        return child

    def spawn_api(self) -> Child:
        if self.api is None:
            self.api = self.stack.child(f"{self.tag}-api", ["api", "--port", str(self.api_port)], self.env)
        self.api.start()
        return self.api

    def kill_all(self) -> None:
        for child in [*self.workers, *([self.api] if self.api else [])]:
            child.kill()


@dataclass
class Planned:
    """One order the scenario will place, and what happened when it did."""

    order_id: str
    customer_id: str
    lines: list[tuple[str, int]]
    token: str
    #: The Idempotency-Key every attempt of this order's POST reuses.
    key: str
    #: What the test itself computes from its own prices.
    amount_minor: int
    #: Seconds after the start of the scenario's arrivals.
    at: float
    submitted: str = "not sent"
    attempts: int = 0
    cancels: list[str] = field(default_factory=list)

    def request(self) -> CheckoutRequest:
        return CheckoutRequest(
            order_id=self.order_id,
            customer_id=self.customer_id,
            lines=[CheckoutLine(sku=sku, quantity=qty) for sku, qty in self.lines],
            payment_token=self.token,
        )

    def body(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "lines": [{"sku": sku, "quantity": qty} for sku, qty in self.lines],
            "payment_token": self.token,
        }


@dataclass
class Outcome:
    """How one order's checkout ended, as Temporal says."""

    order_id: str
    #: None when no workflow exists for the order (refused before anything started).
    workflow_status: WorkflowExecutionStatus | None
    result: CheckoutResult | None = None


TokenPicker = Callable[[random.Random], str]


def default_tokens(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.65:
        return "tok_success"
    if roll < 0.75:
        return "tok_decline"
    if roll < 0.87:
        return f"tok_flaky_{rng.randint(1, 2)}"
    return f"tok_slow_{rng.choice([300, 800, 1500])}"


class Scenario:
    """Use as ``async with Scenario(...) as sc``; the processes it started are killed on the way out."""

    def __init__(self, name: str, stack: FaultStack, scale: Scale, knobs: Knobs | None = None) -> None:
        self.name = name
        self.stack = stack
        self.scale = scale
        self.knobs = knobs or Knobs()
        self.seed = seed_for(name)
        self.rng = random.Random(self.seed)
        # Names of SKUs and orders come from the seed too: a SKU's name picks its shard, so the same
        # seed gives the same plan. (Every run starts a fresh stack, so names never meet old ones.)
        self.prefix = f"{name[:10]}-{self.seed}"
        if self.knobs.shared:
            if self.knobs not in stack.pools:
                stack.pools[self.knobs] = Processes(stack, f"shared-{uuid.uuid4().hex[:6]}", self.knobs)
            self.procs: Processes = stack.pools[self.knobs]
        else:
            self.procs = Processes(stack, self.prefix, self.knobs)
        self.task_queue = self.procs.task_queue
        self.env = self.procs.env
        self.settings: Settings = stack.settings(
            task_queue=self.task_queue,
            payment_timeout_seconds=self.knobs.payment_timeout_seconds,
            checkout_payment_deadline_seconds=self.knobs.payment_deadline_seconds,
            hold_ttl_seconds=self.knobs.hold_ttl_seconds,
        )
        self.faults: list[tuple[float, str]] = []
        self.notes: list[str] = []
        self.orders: list[Planned] = []
        self.skus: dict[str, int] = {}
        self.prices: dict[str, Decimal] = {}
        #: Units this test put in per SKU (seed stock plus acknowledged receipts): conservation's input.
        self.received: dict[str, int] = {}
        self.started = time.monotonic()
        self.t0 = self.started
        self.databases: Databases
        self.store: StockStore
        self.temporal: Client
        self.client: CheckoutClient
        self.violations: list[str] = []
        self.reconcile: str = "not run"
        self.outcome_counts: Counter[str] = Counter()
        self.details: list[str] = []
        #: The longest checkouts (order id, seconds from start to close).
        self.slowest: list[tuple[str, float]] = []
        #: Seconds since the scenario began at which each phase was done.
        self.marks: dict[str, float] = {}
        #: When (seconds into the arrivals) the last fault was over; 0 before any.
        self.healed_at = 0.0

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Scenario:
        print(f"\n=== fault scenario {self.name}: seed {self.seed} (INVSAGA_FAULT_SEED={self.seed}) ===")
        await self.stack.ensure_up()
        self.databases = await Databases.open(self.settings)
        self.store = StockStore(self.databases)
        self.temporal = await connect_configured(self.settings)
        self.client = CheckoutClient(self.temporal, task_queue=self.task_queue)
        await self._reset_sweeper_schedule()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.knobs.shared:
            self.procs.kill_all()
        with contextlib.suppress(Exception):
            await self.databases.close()
        REPORTS.append(self.report())

    async def _reset_sweeper_schedule(self) -> None:
        """The hold sweeper's schedule starts its runs on the task queue of the worker that created
        it. Point it at this scenario's task queue, so the sweeper runs here (every ``SWEEP_EVERY``)."""
        if self.stack.schedule_queue == self.task_queue:
            return
        with contextlib.suppress(RPCError):
            await self.temporal.get_schedule_handle(SCHEDULE_ID).delete()
        await ensure_sweeper_schedule(self.temporal, self.task_queue, SWEEP_EVERY)
        self.stack.schedule_queue = self.task_queue

    # --- stock -----------------------------------------------------------------------------------

    async def stock(self, units: tuple[int, int] = (10, 18)) -> list[str]:
        """Fresh SKUs on every shard, each with a random price and little stock: ``units`` is sized for
        the CI scale's 28 orders over 4 SKUs and grows with the number of orders per SKU."""
        per_shard = self.scale.skus_per_shard
        factor = self.scale.orders / 28 * 2 / per_shard
        units = (max(1, round(units[0] * factor)), max(1, round(units[1] * factor)))
        router = self.databases.router
        by_shard: dict[int, list[str]] = {}
        n = 0
        while any(len(by_shard.get(s, [])) < per_shard for s in range(self.stack.SHARDS)):
            sku = f"F-{self.prefix}-{n}"
            n += 1
            shard = router.shard_of(sku)
            if len(by_shard.setdefault(shard, [])) < per_shard:
                by_shard[shard].append(sku)
        for shard, skus in by_shard.items():
            for sku in skus:
                self.skus[sku] = shard
                self.prices[sku] = Decimal(self.rng.randrange(200, 4000)) / 100
        await upsert_products(
            self.databases.core,
            [Product(sku=sku, name=f"fault item {sku}", price=price) for sku, price in self.prices.items()],
        )
        for sku in self.skus:
            quantity = self.rng.randint(*units)
            await self.store.receive(
                sku, "main", quantity, idempotency_key=f"seed-{sku}", reference="fault-seed"
            )
            self.received[sku] = quantity
        return list(self.skus)

    # --- processes -------------------------------------------------------------------------------

    @property
    def workers(self) -> list[Child]:
        return self.procs.workers

    @property
    def api(self) -> Child | None:
        return self.procs.api

    @property
    def api_port(self) -> int:
        return self.procs.api_port

    def spawn_worker(self) -> Child:
        return self.procs.spawn_worker()

    async def worker_ready(self, child: Child, within: float = 60) -> None:
        await wait_http_ok(child.health_url, within=within, what=child.name, child=child)

    async def start_workers(self, count: int) -> list[Child]:
        started = [self.spawn_worker() for _ in range(count)]
        await asyncio.gather(*(self.worker_ready(w) for w in started))
        return started

    def spawn_api(self) -> Child:
        return self.procs.spawn_api()

    async def api_ready(self, within: float = 60) -> None:
        assert self.api is not None
        await wait_http_ok(f"{self.api_url}/readyz", within=within, what="api", child=self.api)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start_processes(self) -> None:
        """The scenario's workers and (if it has one) its API, started together; with shared
        processes, only those an earlier scenario killed are started again."""
        for _ in range(self.knobs.workers - len(self.live_workers)):
            self.spawn_worker()
        waits = [self.worker_ready(w) for w in self.live_workers]
        if self.knobs.api:
            if self.api is None or not self.api.alive:
                self.spawn_api()
            waits.append(self.api_ready())
        await asyncio.gather(*waits)
        self.mark("processes up")

    @property
    def live_workers(self) -> list[Child]:
        return [w for w in self.workers if w.alive]

    # --- the record ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, phase: str) -> None:
        self.marks[phase] = round(time.monotonic() - self.started, 1)

    def fault(self, what: str, *, quiet: bool = False) -> None:
        self.faults.append((round(self.elapsed(), 2), what))
        if not quiet:
            print(f"  [{self.elapsed():6.2f}s] fault: {what}")

    async def until(self, at: float) -> None:
        """Sleep until ``at`` seconds after the arrivals started."""
        await asyncio.sleep(max(0.0, at - self.elapsed()))

    async def fault_at(self, at: float, *, heal: float | None = None) -> None:
        """Wait for a fault's planned moment, but give the system ``heal`` seconds (default: one
        outage) after the previous fault's recovery, so outages never run into one another."""
        heal = self.scale.outage_seconds if heal is None else heal
        await self.until(max(at, self.healed_at + heal) if self.healed_at else at)

    def healed(self) -> None:
        """The fault just injected is over (the server is back)."""
        self.healed_at = self.elapsed()

    def moments(self, rounds: int, over: float, *, start: float = 0.15, end: float = 0.8) -> list[float]:
        """``rounds`` random moments spread over the middle of an arrival window of ``over`` seconds."""
        span = (end - start) * over / rounds
        return [round(start * over + (r + self.rng.uniform(0.1, 0.9)) * span, 2) for r in range(rounds)]

    def note(self, what: str) -> None:
        self.notes.append(what)

    # --- orders ----------------------------------------------------------------------------------

    def plan(
        self,
        count: int,
        *,
        over: float,
        tokens: TokenPicker = default_tokens,
        skus: Sequence[str] | None = None,
        max_lines: int = 2,
        quantities: tuple[int, int] = (1, 3),
        tag: str = "o",
        must_include: Sequence[str] = (),
    ) -> list[Planned]:
        """``count`` orders arriving at random over ``over`` seconds, appended to ``self.orders``.
        With ``must_include`` every order has a line of one of those SKUs."""
        pool = list(skus or self.skus)
        planned = []
        for _ in range(count):
            n = len(self.orders) + 1
            chosen = self.rng.sample(pool, k=min(len(pool), self.rng.randint(1, max_lines)))
            if must_include and not set(chosen) & set(must_include):
                chosen[0] = self.rng.choice(list(must_include))
                chosen = list(dict.fromkeys(chosen))
            lines = [(sku, self.rng.randint(*quantities)) for sku in sorted(chosen)]
            order = Planned(
                order_id=f"{self.prefix}-{tag}{n}",
                customer_id=f"cust-{self.rng.randrange(25)}",
                lines=lines,
                token=tokens(self.rng),
                key=f"key-{self.prefix}-{n}",
                amount_minor=int(sum(self.prices[sku] * qty for sku, qty in lines) * 100),
                at=round(self.rng.uniform(0, over), 3),
            )
            planned.append(order)
            self.orders.append(order)
        return planned

    async def drive(
        self,
        orders: Sequence[Planned],
        submit: Callable[[Planned], Awaitable[None]],
        *faults: Awaitable[None],
    ) -> None:
        """Place every order at its time, while the fault coroutines run; returns when all are done."""
        self.t0 = time.monotonic()

        async def place(order: Planned) -> None:
            await asyncio.sleep(max(0.0, order.at - self.elapsed()))
            await submit(order)

        await asyncio.gather(*(place(order) for order in orders), *faults)
        self.mark("orders placed")

    async def submit_http(self, order: Planned, *, budget: float = 90.0) -> None:
        """POST the checkout; on a dropped connection or a 5xx retry with the same Idempotency-Key."""
        assert self.api is not None
        deadline = time.monotonic() + budget
        delay = 0.2
        headers = {**CHECKOUT_AUTH, "Idempotency-Key": order.key}
        async with httpx.AsyncClient(base_url=self.api_url, timeout=45) as http:
            while True:
                order.attempts += 1
                try:
                    response = await http.post("/v1/checkouts", json=order.body(), headers=headers)
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                else:
                    if response.status_code in (202, 409, 422):
                        order.submitted = "held" if response.status_code == 202 else _problem_slug(response)
                        return
                    last = f"{response.status_code} {_problem_slug(response)}"
                    if response.status_code != 503:
                        self.note(f"{order.order_id}: HTTP {last} (retried with the same key)")
                if time.monotonic() > deadline:
                    order.submitted = f"gave up after {order.attempts} attempts: {last}"
                    self.note(f"{order.order_id}: {order.submitted}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def submit_client(self, order: Planned, *, budget: float = 60.0) -> None:
        """Start the checkout with the Python client (update-with-start) and wait for the stock decision."""
        deadline = time.monotonic() + budget
        while True:
            order.attempts += 1
            try:
                view = await asyncio.wait_for(self.client.start(order.request()), timeout=40)
            except (
                RPCError,
                TimeoutError,
                WorkflowUpdateRPCTimeoutOrCancelledError,
                ShardUnavailable,
            ) as exc:
                # No stock decision in time, or Temporal unavailable (the client says ShardUnavailable,
                # the API 503): retry, as the API tells its callers to; the same order attaches to it.
                last = f"{type(exc).__name__}: {exc}"
                self.note(f"{order.order_id}: {type(exc).__name__} before the stock decision, retried")
            else:
                order.submitted = "held" if view.held else f"refused {view.status.value}"
                return
            if time.monotonic() > deadline:
                order.submitted = f"gave up: {last}"
                self.note(f"{order.order_id}: {order.submitted}")
                return
            await asyncio.sleep(0.5)

    async def start_only(self, order: Planned) -> None:
        """Start the workflow without waiting for anything (the cancel scenario wants it mid-flight)."""
        order.attempts += 1
        await self.client.start_without_waiting(order.request())
        order.submitted = "started"

    async def receive_http(self, sku: str, quantity: int, n: int) -> None:
        """An operator's receipt over HTTP, sent twice with one key: it must count once."""
        assert self.api is not None
        key = f"restock-{self.prefix}-{n}"
        body = {"quantity": quantity, "reference": f"fault-restock-{self.prefix}-{n}"}
        answers = []
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as http:
            for _ in range(60):
                try:
                    response = await http.post(
                        f"/v1/stock/{sku}/main/receipts",
                        json=body,
                        headers={**ADMIN_AUTH, "Idempotency-Key": key},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code == 200:
                    answers.append(response)
                    if len(answers) == 2:
                        break
                    continue
                if response.status_code < 500:
                    raise AssertionError(f"receipt refused: {response.status_code} {response.text}")
                await asyncio.sleep(0.5)
        if answers:
            self.received[sku] += quantity
            self.fault(f"received {quantity} x {sku} over HTTP, sent {len(answers)} times with one key")
        else:
            self.note(f"receipt of {sku} never answered; its conservation is checked by ledger only")
            self.received.pop(sku, None)

    def restock(self, over: float, n: int = 1) -> Awaitable[None]:
        """An operator's receipt at a random moment of the arrivals, drawn now so the plan is the seed's."""
        at = round(self.rng.uniform(0.2, 0.9) * over, 2)
        sku = self.rng.choice(list(self.skus))
        quantity = self.rng.randint(2, 6)

        async def receive() -> None:
            await self.until(at)
            await self.receive_http(sku, quantity, n)

        return receive()

    # --- the end -------------------------------------------------------------------------------

    async def settle(self) -> dict[str, Outcome]:
        """Wait (bounded) until every order's checkout has ended; then read how each one ended."""
        deadline = time.monotonic() + self.scale.settle_seconds
        gate = asyncio.Semaphore(16)
        #: Each order's workflow status; None: no workflow. Orders not in it are still to be asked.
        status: dict[str, WorkflowExecutionStatus | None] = {}
        durations: dict[str, float] = {}

        async def look(order_id: str) -> None:
            async with gate:
                try:
                    described = await self.client.handle(order_id).describe()
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        status[order_id] = None
                    return  # anything else: Temporal is still coming back, ask again next round
                status[order_id] = described.status
                if described.close_time is not None and described.start_time is not None:
                    took = (described.close_time - described.start_time).total_seconds()
                    durations[order_id] = round(took, 1)

        def still_open() -> list[str]:
            return [
                o.order_id
                for o in self.orders
                if o.order_id not in status or status[o.order_id] is WorkflowExecutionStatus.RUNNING
            ]

        while open_ := still_open():
            await asyncio.gather(*(look(order_id) for order_id in open_))
            stuck = still_open()
            if not stuck:
                break
            if time.monotonic() > deadline:
                described = [await self._describe_stuck(o) for o in stuck[:10]]
                raise AssertionError(
                    f"{len(stuck)} checkouts still running {self.scale.settle_seconds:.0f}s after the "
                    f"last order (seed {self.seed}):\n" + "\n".join(described) + "\n" + self._process_logs()
                )
            await asyncio.sleep(0.5)
        # A NOT_FOUND seen while a start was still in flight is asked once more.
        await asyncio.gather(*(look(o.order_id) for o in self.orders if status.get(o.order_id) is None))

        outcomes: dict[str, Outcome] = {}

        async def result(order: Planned) -> None:
            async with gate:
                wf_status = status.get(order.order_id)
                outcome = Outcome(order.order_id, wf_status)
                if wf_status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED):
                    outcome.result = await self.client.result(order.order_id)
                outcomes[order.order_id] = outcome

        await asyncio.gather(*(result(order) for order in self.orders))
        self.mark("all ended")
        self.slowest = sorted(durations.items(), key=lambda item: -item[1])[:3]
        return outcomes

    async def history_digest(self, order_id: str, limit: int = 40) -> str:
        """The checkout's history in one line per event that matters, to see where time went."""
        lines = []
        first = None
        async for event in self.client.handle(order_id).fetch_history_events():
            when = event.event_time.ToDatetime().timestamp()
            first = first if first is not None else when
            kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            if kind.startswith("WORKFLOW_TASK"):
                continue
            extra = ""
            if event.HasField("activity_task_scheduled_event_attributes"):
                extra = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.HasField("activity_task_failed_event_attributes"):
                extra = event.activity_task_failed_event_attributes.failure.message[:100]
            elif event.HasField("activity_task_timed_out_event_attributes"):
                extra = event.activity_task_timed_out_event_attributes.failure.message[:100]
            elif event.HasField("marker_recorded_event_attributes"):
                extra = "local activity"
            lines.append(f"    +{when - first:6.2f}s {kind} {extra}")
        return "\n".join(lines[:limit])

    async def open_checkouts(self) -> str:
        """How many of this scenario's checkouts are running right now, for the fault log."""
        query = f"WorkflowId STARTS_WITH 'checkout-{self.prefix}-' AND ExecutionStatus = 'Running'"
        try:
            counted = await asyncio.wait_for(self.temporal.count_workflows(query), timeout=3)
        except (RPCError, TimeoutError):
            return "? checkouts running"
        return f"{counted.count} checkouts running"

    async def _describe_stuck(self, order_id: str) -> str:
        try:
            view = await self.client.status(order_id)
            described = await self.client.handle(order_id).describe()
            pending = [
                f"{a.activity_type.name}(attempt {a.attempt}: {a.last_failure.message[:120]!r})"
                for a in described.raw_description.pending_activities
            ]
            return f"  {order_id}: {view.status.value} attention={view.attention!r} pending={pending}"
        except Exception as exc:
            return f"  {order_id}: cannot describe ({type(exc).__name__}: {exc})"

    def _process_logs(self) -> str:
        parts = []
        for child in [*self.workers[-2:], *([self.api] if self.api else [])]:  # the latest ones
            parts.append(f"--- {child.name} (alive={child.alive}) ---\n{child.log_tail(15)}")
        return "\n".join(parts)

    def report(self) -> dict[str, Any]:
        submitted = Counter(
            o.submitted if not o.submitted.startswith("gave up") else "gave up" for o in self.orders
        )
        return {
            "scenario": self.name,
            "seed": self.seed,
            "scale": self.scale.name,
            "orders": len(self.orders),
            "outcomes": dict(self.outcome_counts),
            "submitted": dict(submitted),
            "faults": len(self.faults),
            "fault_log": list(self.faults),
            "violations": list(self.violations),
            "notes": list(self.notes),
            "details": list(self.details),
            "reconcile": self.reconcile,
            "seconds": round(time.monotonic() - self.started, 1),
            "timeline": dict(self.marks),
        }

    def count_outcomes(self, outcomes: dict[str, Outcome]) -> Counter[str]:
        """Tally how the orders ended; keep a line for each one worth a look (cancelled, or rejected
        for another reason than stock or a decline)."""
        by_id = {o.order_id: o for o in self.orders}
        for oid, outcome in outcomes.items():
            result, order = outcome.result, by_id[oid]
            plain = result is not None and (
                result.status is CheckoutStatus.CONFIRMED
                or (result.reason is not None and result.reason.value in ("out_of_stock", "payment_declined"))
            )
            if order.cancels or (not plain and outcome.workflow_status is not None):
                if result is None:
                    ended = str(outcome.workflow_status)
                else:
                    reason = f" {result.reason.value}" if result.reason else ""
                    ended = f"{result.status.value}{reason} {result.detail or ''}".strip()
                self.details.append(f"{oid} {order.token} {order.lines}: {ended}; cancels {order.cancels}")
        counts: Counter[str] = Counter()
        for outcome in outcomes.values():
            if outcome.result is None:
                counts[
                    "no checkout" if outcome.workflow_status is None else outcome.workflow_status.name
                ] += 1
            else:
                result = outcome.result
                reason = f"/{result.reason.value}" if result.reason else ""
                counts[f"{result.status.value}{reason}"] += 1
        self.outcome_counts = counts
        return counts

    def print_report(self) -> None:
        report = self.report()
        print(f"--- {self.name}: seed {self.seed}, {report['orders']} orders, {report['faults']} faults ---")
        print(f"  outcomes:   {report['outcomes']}")
        print(f"  submitted:  {report['submitted']}")
        for at, what in self.faults:
            print(f"  fault at {at:6.2f}s: {what}")
        for note in self.notes[:20]:
            print(f"  note: {note}")
        for line in self.details[:40]:
            print(f"  order {line}")
        print(f"  reconcile:  {self.reconcile}")
        print(f"  timeline:   {self.marks}; slowest checkouts {self.slowest}")
        print(f"  violations: {len(self.violations)}")
        for violation in self.violations:
            print(f"    - {violation}")


def _problem_slug(response: httpx.Response) -> str:
    try:
        kind = response.json().get("type", "")
    except ValueError:
        return response.text[:80]
    return str(kind).rsplit(":", 1)[-1] or str(response.status_code)


__all__ = [
    "REPORTS",
    "Knobs",
    "Outcome",
    "Planned",
    "Scenario",
    "default_tokens",
    "seed_for",
    "workflow_id_for",
]
