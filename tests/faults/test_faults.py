"""Seeded fault scenarios against real servers (issue 10, "A fault suite in CI").

Each scenario drives checkouts over a few SKUs with little stock while it breaks one part of the
system, waits until every checkout has ended, then checks invariants 1-6 of ../shared/ARCHITECTURE.md
with its own SQL and runs ``invsaga reconcile --json``. Zero violations, or the assertion lists them.

    .venv/bin/pytest tests/faults                              # CI size, part of `make test`
    INVSAGA_FAULT_SCALE=full .venv/bin/pytest tests/faults     # full size, by hand
    INVSAGA_FAULT_SEED=<seed> .venv/bin/pytest tests/faults -k <scenario>   # rerun a printed seed
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from invsaga.domain.checkout import CheckoutStatus, RejectReason, workflow_id_for
from invsaga.domain.errors import CancelRefused, CheckoutNotFound, ShardUnavailable
from invsaga.temporal import search_attributes
from tests.faults.harness import Knobs, Outcome, Planned, Scenario, default_tokens
from tests.faults.invariants import check_invariants, run_reconcile
from tests.faults.stack import FaultStack, Scale, current_scale
from workflows.checkout import CheckoutWorkflow
from workflows.hold_sweeper import SCHEDULE_ID

pytestmark = [pytest.mark.faults, pytest.mark.timeout(current_scale().timeout_seconds)]


#: The killing scenarios share one task queue, its two workers and its API (what one kills, it replaces).
SHARED = Knobs(payment_timeout_seconds=1.0, payment_deadline_seconds=30, hold_ttl_seconds=120, shared=True)

Expectations = Callable[[dict[str, Outcome]], Awaitable[list[str]]]


async def finish(
    sc: Scenario, outcomes: dict[str, Outcome] | None = None, expectations: Expectations | None = None
) -> None:
    """Wait for every checkout to end, check every invariant (and the scenario's own expectations of
    how particular orders end), run reconcile; fail listing every violation."""
    if outcomes is None:
        outcomes = await sc.settle()
    sc.count_outcomes(outcomes)
    if os.environ.get("INVSAGA_FAULT_DEBUG") and sc.slowest:
        order_id, seconds = sc.slowest[0]
        print(f"slowest checkout {order_id} ({seconds}s):\n{await sc.history_digest(order_id)}")
    violations = await check_invariants(sc, outcomes)
    if expectations is not None:
        violations += await expectations(outcomes)
    sc.mark("checked")
    sc.reconcile, found = await asyncio.to_thread(run_reconcile, sc)
    sc.mark("reconciled")
    violations += found
    sc.violations = violations
    sc.print_report()
    assert not violations, (
        f"{sc.name} (seed {sc.seed}; rerun: INVSAGA_FAULT_SEED={sc.seed} pytest tests/faults -k {sc.name}): "
        f"{len(violations)} violations:\n" + "\n".join(violations)
    )


# --- processes killed ------------------------------------------------------------------------------


async def test_worker_sigkill(fault_stack: FaultStack, scale: Scale) -> None:
    """Workers are SIGKILLed mid-flight (sometimes all of them at once); fresh ones take over."""
    async with Scenario("worker_sigkill", fault_stack, scale, SHARED) as sc:
        await sc.stock()
        await sc.start_processes()
        over = scale.arrival_seconds
        orders = sc.plan(scale.orders, over=over)
        plan = [(at, sc.rng.random()) for at in sc.moments(scale.rounds, over)]

        async def faults() -> None:
            for at, share in plan:
                await sc.fault_at(at)
                live = sc.live_workers
                victims = live[: max(1, round(share * len(live)))]
                running = await sc.open_checkouts()
                for victim in victims:
                    pid = victim.pid
                    victim.kill()
                    sc.fault(
                        f"SIGKILL {victim.name} (pid {pid}) with {running}, "
                        f"{len(live) - len(victims)} worker(s) left"
                    )
                fresh = [sc.spawn_worker() for _ in victims]
                await asyncio.gather(*(sc.worker_ready(w) for w in fresh))
                sc.fault(f"started {len(fresh)} fresh worker(s)")
                sc.healed()

        await sc.drive(orders, sc.submit_http, faults(), sc.restock(over))
        await finish(sc)


async def test_temporal_restart(fault_stack: FaultStack, scale: Scale) -> None:
    """The Temporal dev server is SIGKILLed and restarted on the same port and SQLite file."""
    async with Scenario("temporal_restart", fault_stack, scale, SHARED) as sc:
        await sc.stock()
        await sc.start_processes()
        over = scale.arrival_seconds
        orders = sc.plan(scale.orders, over=over)
        plan = [
            (at, round(scale.outage_seconds * sc.rng.uniform(0.5, 1.0), 2))
            for at in sc.moments(scale.rounds, over)
        ]

        async def faults() -> None:
            serving = sc.live_workers
            for at, outage in plan:
                await sc.fault_at(at)
                running = await sc.open_checkouts()
                fault_stack.kill_temporal()
                sc.fault(f"SIGKILL the Temporal dev server with {running}, down for {outage}s")
                await asyncio.sleep(outage)
                fault_stack.start_temporal()
                sc.fault("restarted Temporal on the same port and SQLite file")
                sc.healed()
            await asyncio.sleep(3)
            for worker in serving:  # a worker must ride out a Temporal restart, not exit
                if not worker.alive:
                    code = worker.process.returncode if worker.process else None
                    sc.note(f"{worker.name} exited ({code}) around the Temporal restart")

        await sc.drive(orders, sc.submit_http, faults(), sc.restock(over))
        await finish(sc)


async def test_api_kill(fault_stack: FaultStack, scale: Scale) -> None:
    """The API process is SIGKILLed with requests in flight and restarted; clients retry with their key."""
    async with Scenario("api_kill", fault_stack, scale, SHARED) as sc:
        await sc.stock()
        await sc.start_processes()
        over = scale.arrival_seconds
        orders = sc.plan(scale.orders, over=over)
        plan = [(at, round(sc.rng.uniform(0.3, 1.5), 2)) for at in sc.moments(scale.rounds * 2, over)]

        async def faults() -> None:
            assert sc.api is not None
            for at, down in plan:
                await sc.fault_at(at, heal=1.0)
                pid = sc.api.pid
                running = await sc.open_checkouts()
                sc.api.kill()
                sc.fault(f"SIGKILL the API (pid {pid}) with {running}, restart in {down}s")
                await asyncio.sleep(down)
                sc.spawn_api()
                await sc.api_ready()
                sc.fault("API serving again on the same port")
                sc.healed()

        await sc.drive(orders, sc.submit_http, faults(), sc.restock(over))
        await finish(sc)


# --- dependencies down -----------------------------------------------------------------------------


async def test_shard_stopped(fault_stack: FaultStack, scale: Scale) -> None:
    """One inventory shard's Postgres is stopped (every connection cut) and started again."""
    async with Scenario("shard_stopped", fault_stack, scale, SHARED) as sc:
        await sc.stock()
        await sc.start_processes()
        over = scale.arrival_seconds
        orders = sc.plan(scale.orders, over=over)
        first = sc.rng.randrange(fault_stack.SHARDS)
        plan = [
            (at, (first + r) % fault_stack.SHARDS, round(scale.outage_seconds * sc.rng.uniform(0.7, 1.3), 2))
            for r, at in enumerate(sc.moments(scale.rounds, over))
        ]

        async def faults() -> None:
            for at, shard, outage in plan:
                await sc.fault_at(at)
                server = fault_stack.shard_servers[shard]
                running = await sc.open_checkouts()
                await fault_stack.stop_server(server)
                sc.fault(
                    f"stopped shard {shard}'s Postgres (port {server.port}) with {running} for {outage}s"
                )
                await asyncio.sleep(outage)
                await fault_stack.start_server(server)
                sc.fault(f"started shard {shard} again")
                sc.healed()

        await sc.drive(orders, sc.submit_http, faults(), sc.restock(over))
        await finish(sc)


async def test_payment_provider_down(fault_stack: FaultStack, scale: Scale) -> None:
    """The payment provider is SIGKILLed (slow charges in flight) and comes back after a while."""
    async with Scenario("payment_provider_down", fault_stack, scale, SHARED) as sc:
        await sc.stock()
        await sc.start_processes()
        over = scale.arrival_seconds
        # No tok_flaky_ here: its failures count only once the provider answers, so after an outage
        # they cost two more exponential backoffs (tens of seconds) and test nothing new.
        orders = sc.plan(scale.orders, over=over, tokens=_no_flaky)
        plan = [
            (at, round(scale.outage_seconds * sc.rng.uniform(0.8, 1.5), 2))
            for at in sc.moments(scale.rounds, over)
        ]

        async def faults() -> None:
            for at, outage in plan:
                await sc.fault_at(at)
                running = await sc.open_checkouts()
                fault_stack.kill_payments()
                sc.fault(f"SIGKILL the payment provider with {running}, down for {outage}s")
                await asyncio.sleep(outage)
                await fault_stack.start_payments()
                sc.fault("payment provider serving again")
                sc.healed()

        await sc.drive(orders, sc.submit_http, faults(), sc.restock(over))
        await finish(sc)


def _no_flaky(rng: random.Random) -> str:
    token = default_tokens(rng)
    return "tok_success" if token.startswith("tok_flaky_") else token


# --- cancels at every step -------------------------------------------------------------------------


async def reach(
    sc: Scenario, orders: Iterable[Planned], wanted: set[CheckoutStatus], *, within: float = 30.0
) -> list[Planned]:
    """Wait until every order's live status (its query) is one of ``wanted`` or has ended; return the
    orders in ``wanted``. An order that ended first (say, out of stock) is left out of the phase."""
    orders = list(orders)
    deadline = asyncio.get_running_loop().time() + within

    async def status(order: Planned) -> CheckoutStatus | None:
        # Not started yet, or Temporal is away for a moment.
        with contextlib.suppress(RPCError, CheckoutNotFound, ShardUnavailable):
            return (await sc.client.status(order.order_id)).status
        return None

    while True:
        # At once: a query waits for the workflow's task, which a retrying local activity holds open.
        answers = await asyncio.gather(*(status(order) for order in orders))
        statuses = {o.order_id: st for o, st in zip(orders, answers, strict=True) if st is not None}
        there = [o for o in orders if statuses.get(o.order_id) in wanted]
        ended = [o for o in orders if o not in there and (st := statuses.get(o.order_id)) and st.terminal]
        if len(there) + len(ended) == len(orders):
            for order in ended:
                sc.note(
                    f"{order.order_id} ended {statuses[order.order_id].value} before the cancel could land"
                )
            return there
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not {sorted(wanted)} within {within}s: {statuses}")
        await asyncio.sleep(0.1)


async def wait_stuck(
    sc: Scenario, orders: Iterable[Planned], wanted: set[CheckoutStatus], *, within: float = 30.0
) -> None:
    """Until every order is in ``wanted``, held there by a server that is down. The steps after the
    charge are local activities, which Temporal does not list as pending: the status query says where
    the checkout is (its worker answers it while the step retries)."""
    orders = list(orders)
    there = await reach(sc, orders, wanted, within=within)
    missing = sorted({o.order_id for o in orders} - {o.order_id for o in there})
    assert not missing, f"ended before they were held in {sorted(wanted)}: {missing}"


async def cancel(sc: Scenario, order: Planned, how: str, step: str) -> None:
    """Cancel with Temporal's own cancel (``handle.cancel()``) or with the checkout's ``cancel`` update."""
    oid = order.order_id
    if how == "temporal":
        await sc.client.handle(oid).cancel()
        what = "requested"
    else:
        try:
            answer = await asyncio.wait_for(sc.client.cancel(oid, f"fault suite: during {step}"), timeout=45)
            what = f"{'accepted' if answer.accepted else 'not accepted'} in {answer.status.value}"
        except CancelRefused:
            what = "refused (too late)"
        except CheckoutNotFound as exc:
            # Temporal answers NOT_FOUND "workflow update was aborted by closing workflow" when the
            # cancel races the checkout's end; the client reports that as "no checkout".
            what = f"not found: {exc.message}"
            sc.note(f"cancel update of {oid} raced its end and was answered 'no checkout' (404 over HTTP)")
        except (RPCError, TimeoutError, ShardUnavailable) as exc:
            what = f"failed: {type(exc).__name__}"
    order.cancels.append(f"{how} during {step}: {what}")
    sc.fault(f"{how} cancel of {oid} during {step}: {what}")


async def start_with_quick_tasks(sc: Scenario, order: Planned) -> None:
    """Start the checkout as the client does, but with a 2s workflow task timeout (default 10s).

    While a local activity (placing the order, or confirming it) keeps retrying, the worker reports back
    to Temporal only every 80% of that timeout, and only then does a query, a cancel or an update reach
    the workflow. The saga code is the same; the cancel just lands in the retrying step within seconds
    instead of a quarter minute.
    """
    request = order.request()
    await sc.temporal.start_workflow(
        CheckoutWorkflow.run,
        request,
        id=workflow_id_for(order.order_id),
        task_queue=sc.task_queue,
        task_timeout=timedelta(seconds=2),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.ORDER_ID, order.order_id),
                SearchAttributePair(search_attributes.CUSTOMER_ID, order.customer_id),
                SearchAttributePair(search_attributes.CHECKOUT_STATUS, CheckoutStatus.PENDING.value),
            ]
        ),
    )
    order.attempts += 1
    order.submitted = "started"


async def cancel_seen_first(sc: Scenario, order_id: str) -> bool:
    """Whether the workflow ran a task after Temporal's cancel request and before the charge came back,
    so it saw the cancel while still paying (it must then end CANCELLED)."""
    events = [event async for event in sc.client.handle(order_id).fetch_history_events()]
    kinds = [event.event_type for event in events]
    if EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED not in kinds:
        return False
    requested = kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    charges = {
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "charge_payment"
    }
    charged = next(
        (
            i
            for i, e in enumerate(events)
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id in charges
        ),
        len(events),
    )
    return EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[requested + 1 : charged]


def halves(rng: random.Random, orders: list[Planned]) -> list[tuple[Planned, str]]:
    """Each order with a cancel method, Temporal's cancel or the cancel update, drawn from the seed."""
    methods = ["temporal", "update"] * len(orders)
    rng.shuffle(methods)
    return list(zip(orders, methods, strict=False))


async def test_cancel_at_every_step(fault_stack: FaultStack, scale: Scale) -> None:
    """Temporal cancels and cancel updates landing during reserve, payment, confirm and finish.

    Landing in a step is made certain, not hoped for: a stopped shard holds checkouts in RESERVING
    (reserve retrying) or in the commit; a stopped core database holds them recording the end; slow
    charges (``tok_slow_``, ``tok_late_``) hold them in PAYING. Then random cancels at random moments.
    """
    knobs = Knobs(payment_timeout_seconds=4.0, payment_deadline_seconds=30, api=False)
    async with Scenario("cancel_at_every_step", fault_stack, scale, knobs) as sc:
        await sc.stock(units=(30, 45))  # plenty: the phases are about cancels, not about stock
        await sc.start_processes()
        rng, k = sc.rng, scale.rounds
        shard_x = rng.randrange(fault_stack.SHARDS)
        shard_y = 1 - shard_x
        on = {s: [sku for sku, sh in sc.skus.items() if sh == s] for s in range(fault_stack.SHARDS)}

        # Payment (with random cancels alongside): slow charges are in flight when the cancel comes.
        paying = sc.plan(
            4 * k,
            over=1.0,
            tag="pay",
            tokens=lambda r: r.choice(["tok_slow_2500", "tok_late_1800", "tok_slow_1800"]),
        )
        loose = sc.plan(max(10, scale.orders // 3), over=3.0 * k, tag="any", tokens=_cancel_mix)
        loose_cancels = [
            (o, rng.choice(["temporal", "update"]), round(rng.uniform(0, 2.5), 2))
            for o in loose
            if rng.random() < 0.8
        ]
        paying_cancels = [(o, how, round(rng.uniform(0, 0.5), 2)) for o, how in halves(rng, paying)]
        # The later phases' orders and cancel methods, drawn now so the whole plan is the seed's.
        reserving = sc.plan(3 * k, over=0.0, tag="res", must_include=on[shard_x])
        reserve_cancels = halves(rng, reserving)
        confirming = sc.plan(3 * k, over=0.0, tag="con", skus=on[shard_y], tokens=lambda r: "tok_slow_2500")
        confirm_cancels = halves(rng, confirming)
        finishing = sc.plan(4 * k, over=0.0, tag="fin", tokens=lambda r: "tok_slow_3000")
        early = finishing[: len(finishing) // 2]
        landed: set[str] = set()  # orders whose cancel landed in the step it was meant for

        async def cancel_when_paying(order: Planned, how: str, delay: float) -> None:
            if await reach(sc, [order], {CheckoutStatus.PAYING}):
                await asyncio.sleep(delay)
                await cancel(sc, order, how, "payment")
                landed.add(order.order_id)

        async def cancel_later(order: Planned, how: str, delay: float) -> None:
            await sc.until(order.at + delay)
            step = "unknown step"
            with contextlib.suppress(RPCError, CheckoutNotFound, ShardUnavailable):
                step = (await sc.client.status(order.order_id)).status.value
            await cancel(sc, order, how, f"{step} (random, {delay}s after start)")

        async def payment_and_random() -> None:
            await asyncio.gather(*(cancel_when_paying(*c) for c in paying_cancels))
            await asyncio.gather(*(cancel_later(*c) for c in loose_cancels))

        await sc.drive([*paying, *loose], sc.start_only, payment_and_random())

        # Reserve: shard x is down, so reserve retries and the checkout sits in RESERVING.
        await fault_stack.stop_server(fault_stack.shard_servers[shard_x])
        sc.fault(f"stopped shard {shard_x} to hold reserves")
        for order in reserving:
            await start_with_quick_tasks(sc, order)
        there = {o.order_id for o in await reach(sc, reserving, {CheckoutStatus.RESERVING})}
        reserve_cancels = [(o, how) for o, how in reserve_cancels if o.order_id in there]
        await asyncio.gather(*(cancel(sc, o, how, "reserve") for o, how in reserve_cancels))
        landed.update(o.order_id for o, _ in reserve_cancels)
        # A Temporal cancel is seen at the workflow's next task: wait until its compensation started.
        await reach(
            sc,
            [o for o, how in reserve_cancels if how == "temporal"],
            {CheckoutStatus.COMPENSATING, CheckoutStatus.CANCELLED},
        )
        await fault_stack.start_server(fault_stack.shard_servers[shard_x])
        sc.fault(f"started shard {shard_x} again")

        # Confirm: charged, then shard y goes down, so the commit retries in CONFIRMING.
        for order in confirming:
            await start_with_quick_tasks(sc, order)
        there = {o.order_id for o in await reach(sc, confirming, {CheckoutStatus.PAYING})}
        confirm_cancels = [(o, how) for o, how in confirm_cancels if o.order_id in there]
        await fault_stack.stop_server(fault_stack.shard_servers[shard_y])
        sc.fault(f"stopped shard {shard_y} to hold commits")
        await wait_stuck(sc, [o for o, _ in confirm_cancels], {CheckoutStatus.CONFIRMING})
        await asyncio.gather(*(cancel(sc, o, how, "confirm") for o, how in confirm_cancels))
        landed.update(o.order_id for o, _ in confirm_cancels)
        await asyncio.sleep(1.0)
        await fault_stack.start_server(fault_stack.shard_servers[shard_y])
        sc.fault(f"started shard {shard_y} again")

        # Finish: the core database is down, so finish_order retries; some were cancelled while paying.
        for order in finishing:
            await start_with_quick_tasks(sc, order)
        there = {o.order_id for o in await reach(sc, finishing, {CheckoutStatus.PAYING})}
        finishing = [o for o in finishing if o.order_id in there]
        early = [o for o in early if o.order_id in there]
        await asyncio.gather(*(cancel(sc, o, "update", "payment, before finish") for o in early))
        await fault_stack.stop_server(fault_stack.core_server)
        sc.fault("stopped the core database to hold finish_order")
        # Recording the end: in confirm_order (CONFIRMING), or after the refund of an early cancel.
        await wait_stuck(sc, finishing, {CheckoutStatus.CONFIRMING, CheckoutStatus.COMPENSATING})
        await asyncio.gather(*(cancel(sc, o, "temporal", "finish") for o in finishing))
        landed.update(o.order_id for o in finishing)
        await asyncio.sleep(1.0)
        await fault_stack.start_server(fault_stack.core_server)
        sc.fault("started the core database again")

        Ending = tuple[CheckoutStatus, RejectReason | None]
        confirmed: set[Ending] = {(CheckoutStatus.CONFIRMED, None)}
        cancelled: set[Ending] = {(CheckoutStatus.CANCELLED, None)}
        expected: list[tuple[list[Planned], set[Ending], str]] = [
            (
                paying,
                cancelled,
                "cancelled (Temporal cancel or cancel update) while its charge was in flight",
            ),
            (
                [o for o, how in reserve_cancels if how == "temporal"],
                cancelled,
                "Temporal cancel while its reserve kept retrying against a stopped shard",
            ),
            (
                [o for o, how in reserve_cancels if how == "update"],
                cancelled | {(CheckoutStatus.REJECTED, RejectReason.OUT_OF_STOCK)},
                "cancel update accepted while its reserve kept retrying",
            ),
            (confirming, confirmed, "paid, then cancelled while its commit retried against a stopped shard"),
            (
                [o for o in finishing if o.order_id not in {e.order_id for e in early}],
                confirmed,
                "paid and committed, then a Temporal cancel during finish_order",
            ),
            (
                early,
                cancelled,
                "cancel update accepted while paying, then a Temporal cancel during finish_order",
            ),
        ]

        temporal_paying = {o.order_id for o, how, _ in paying_cancels if how == "temporal"}

        async def expectations(outcomes: dict[str, Outcome]) -> list[str]:
            wrong = []
            for orders, allowed, why in expected:
                for order in (o for o in orders if o.order_id in landed):
                    result = outcomes[order.order_id].result
                    got = (result.status, result.reason) if result else None
                    if order.order_id in temporal_paying and not await cancel_seen_first(sc, order.order_id):
                        continue  # the charge came back before the workflow saw the cancel: either is right
                    if got not in allowed:
                        ended = (
                            f"{result.status.value}/{result.reason} ({result.detail})"
                            if result
                            else "no result"
                        )
                        wanted = " or ".join(f"{st.value}{'/' + r.value if r else ''}" for st, r in allowed)
                        wrong.append(f"cancel {order.order_id}: {why}: ended {ended}, expected {wanted}")
            return wrong

        await finish(sc, expectations=expectations)


def _cancel_mix(rng: random.Random) -> str:
    return rng.choice(["tok_success", "tok_success", "tok_slow_1200", "tok_late_800", "tok_decline"])


# --- payments that answer late, or never -----------------------------------------------------------


def _late_or_lost(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        return f"tok_slow_{rng.choice([200, 700, 1200, 2500])}"  # recorded at once, the answer is lost
    if roll < 0.8:
        return (
            f"tok_late_{rng.choice([150, 700, 1500, 2600, 4000])}"  # recorded late, maybe past the deadline
        )
    return rng.choice(["tok_success", "tok_decline"])


async def test_late_and_lost_payment_replies(fault_stack: FaultStack, scale: Scale) -> None:
    """Charges whose answers are lost (client timeout 0.5s) or that land after the 2s payment deadline."""
    knobs = Knobs(payment_timeout_seconds=0.5, payment_deadline_seconds=2, hold_ttl_seconds=8, api=False)
    async with Scenario("late_and_lost_payment_replies", fault_stack, scale, knobs) as sc:
        await sc.stock(units=(10, 16))
        await sc.start_processes()
        orders = sc.plan(scale.orders, over=scale.arrival_seconds, tokens=_late_or_lost)
        for order in orders:
            if order.token.startswith(("tok_slow_", "tok_late_")):
                kind = "lost reply" if order.token.startswith("tok_slow_") else "late charge"
                sc.faults.append((order.at, f"{kind} for {order.order_id} ({order.token})"))
        await sc.drive(orders, sc.submit_client)
        await finish(sc)


# --- expiry racing the commit ----------------------------------------------------------------------


async def test_expiry_races_commit(fault_stack: FaultStack, scale: Scale) -> None:
    """Holds with a 3s TTL and a sweeper running flat out (one hold per batch), while a shard is down and
    then every worker is gone for longer than the TTL: paid orders wait for their commit past their
    holds' expiry. No order may be confirmed short, and no unit sold twice."""
    knobs = Knobs(payment_timeout_seconds=0.7, payment_deadline_seconds=2, hold_ttl_seconds=3, api=False)
    async with Scenario("expiry_races_commit", fault_stack, scale, knobs) as sc:
        await sc.stock(units=(18, 30))
        await sc.start_processes()
        over = max(12.0, scale.arrival_seconds)
        ttl = knobs.hold_ttl_seconds
        orders = sc.plan(scale.orders, over=over, tokens=_expiry_mix, max_lines=3)
        shard = sc.rng.randrange(fault_stack.SHARDS)
        moments = sc.moments(2 * scale.rounds, over, start=0.2, end=0.75)
        # Racers: a burst of orders with a line on the shard, paying when it stops. Their commits
        # wait for the shard past their holds' expiry, while the sweeper keeps trying to expire them.
        for at in moments[::2]:
            burst = sc.plan(
                max(4, scale.orders // 6),
                over=0.8,
                tag="race",
                must_include=[sku for sku, sh in sc.skus.items() if sh == shard],
                tokens=lambda r: f"tok_slow_{r.choice([600, 900, 1200])}",
            )
            for order in burst:
                order.at = round(max(0.0, at - 1.2) + order.at, 3)
            orders += burst
        expired = [0]
        stop = asyncio.Event()

        async def sweep() -> None:
            """The sweeper's own code path, as fast as it goes: expire one hold at a time on every
            shard, and trigger the sweeper schedule every second."""
            tick = 0
            while not stop.is_set():
                for index in range(fault_stack.SHARDS):
                    with contextlib.suppress(ShardUnavailable):
                        expired[0] += await sc.store.expire(index, limit=1)
                tick += 1
                if tick % 30 == 0:
                    with contextlib.suppress(RPCError):
                        await sc.temporal.get_schedule_handle(SCHEDULE_ID).trigger()
                await asyncio.sleep(0.03)

        async def faults() -> None:
            for r, at in enumerate(moments):
                await sc.fault_at(at, heal=1.0)
                if r % 2 == 0:
                    server = fault_stack.shard_servers[shard]
                    await fault_stack.stop_server(server)
                    sc.fault(f"stopped shard {shard} for {ttl + 2}s (> hold TTL {ttl}s)")
                    await asyncio.sleep(ttl + 2)
                    await fault_stack.start_server(server)
                    sc.fault(f"started shard {shard} again")
                    sc.healed()
                else:
                    live = sc.live_workers
                    for worker in live:
                        worker.kill()
                    sc.fault(f"SIGKILL all {len(live)} workers for {ttl + 1}s (> hold TTL {ttl}s)")
                    await asyncio.sleep(ttl + 1)
                    await sc.start_workers(2)
                    sc.fault("started 2 fresh workers")
                    sc.healed()

        sweeper = asyncio.create_task(sweep())
        try:
            await sc.drive(orders, sc.submit_client, faults())
            # The sweeper keeps racing every commit until the last checkout has ended.
            outcomes = await sc.settle()
        finally:
            stop.set()
            await sweeper
        late = await committed_past_expiry(sc)
        sc.note(f"the sweeper expired {expired[0]} holds, one per batch")
        sc.note(f"{late} holds were committed after their expires_at: pinned, so the sweeper left them")
        await finish(sc, outcomes)


async def committed_past_expiry(sc: Scenario) -> int:
    """Holds that were still held past their TTL and then sold: the race the sweeper must lose."""
    total = 0
    for server in sc.stack.shard_servers:
        conn = await asyncpg.connect(server.dsn("inventory"), timeout=10)
        try:
            total += await conn.fetchval(
                "SELECT count(*) FROM reservations"
                " WHERE state = 'committed' AND updated_at > expires_at AND order_id LIKE $1",
                f"{sc.prefix}-%",
            )
        finally:
            await conn.close()
    return total


def _expiry_mix(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return "tok_success"
    if roll < 0.75:
        return f"tok_slow_{rng.choice([300, 900, 1500])}"
    if roll < 0.9:
        return f"tok_late_{rng.choice([200, 600, 1200])}"
    return default_tokens(rng)
