"""Lines without a location: allocated over the SKU's locations inside the one-statement reserve.

Each test that reserves runs twice: through direct per-call transactions and through the group-commit
batcher (the ``reserve`` fixture).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from pydantic import ValidationError

from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, validate_checkout
from invsaga.domain.errors import ReservationClosed
from invsaga.domain.stock import (
    Allocation,
    AllocationPolicy,
    AllocationStrategy,
    HoldState,
    ReserveRequest,
    StockLine,
)
from invsaga.store.stock import StockStore
from tests.helpers import assert_clean_audit, skus_on_shard, stock_up

pytestmark = pytest.mark.usefixtures("clean_shards")

PRIORITY = AllocationPolicy(strategy=AllocationStrategy.PRIORITY, priority=("main", "east"))
MOST = AllocationPolicy(strategy=AllocationStrategy.MOST_AVAILABLE)


def anywhere(order_id: str, *lines: tuple[str, int, str | None], policy: AllocationPolicy = PRIORITY):
    """A reserve request; a line's location None lets the reserve allocate it."""
    return ReserveRequest(
        order_id=order_id,
        lines=[StockLine(sku=s, quantity=q, location=loc) for s, q, loc in lines],
        allocation=policy,
    )


async def stocked(store: StockStore, shard: int, **per_location: int) -> str:
    (sku,) = skus_on_shard(store.router, shard, 1, prefix="ALLOC")
    for location, quantity in per_location.items():
        await stock_up(store, sku, quantity, location)
    return sku


async def free_at(store: StockStore, sku: str) -> dict[str, int]:
    return {level.location: level.available for level in await store.get(sku)}


def split(outcome) -> set[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    return {(a.sku, a.location, a.quantity) for a in outcome.allocations}


# --- the strategies -----------------------------------------------------------------------------------


async def test_priority_takes_one_location_that_can_fill_the_line_before_splitting(store, reserve, databases):
    sku = await stocked(store, 0, main=3, east=10, west=5)

    small = await reserve(0, anywhere("p-small", (sku, 2, None)))
    assert split(small) == {(sku, "main", 2)}
    # main has 1 left, so the first location in priority order that can fill 5 alone is east.
    whole = await reserve(0, anywhere("p-whole", (sku, 5, None)))
    assert split(whole) == {(sku, "east", 5)}
    # 1 + 5 + 5 = 11 left and no single location holds 11: split in priority order, unlisted last.
    spread = await reserve(0, anywhere("p-spread", (sku, 11, None)))
    assert split(spread) == {(sku, "main", 1), (sku, "east", 5), (sku, "west", 5)}
    assert await free_at(store, sku) == {"main": 0, "east": 0, "west": 0}
    await assert_clean_audit(databases)


async def test_locations_not_listed_come_after_the_listed_ones_in_name_order(store, reserve):
    sku = await stocked(store, 1, zulu=4, alpha=4, main=1)
    policy = AllocationPolicy(priority=("main",))
    outcome = await reserve(1, anywhere("unlisted", (sku, 6, None), policy=policy))
    assert split(outcome) == {(sku, "main", 1), (sku, "alpha", 4), (sku, "zulu", 1)}


async def test_most_available_goes_first_and_ties_go_by_name(store, reserve, databases):
    sku = await stocked(store, 0, main=3, east=7, west=7)
    first = await reserve(0, anywhere("m-1", (sku, 2, None), policy=MOST))
    assert split(first) == {(sku, "east", 2)}  # east and west tie at 7: east by name
    second = await reserve(0, anywhere("m-2", (sku, 6, None), policy=MOST))
    assert split(second) == {(sku, "west", 6)}
    # 3, 5, 1 left: nine units come from all three, the most available first.
    third = await reserve(0, anywhere("m-3", (sku, 9, None), policy=MOST))
    assert split(third) == {(sku, "east", 5), (sku, "main", 3), (sku, "west", 1)}
    await assert_clean_audit(databases)


async def test_a_short_allocated_line_reports_the_total_and_holds_nothing(store, reserve, databases):
    sku = await stocked(store, 0, main=2, east=3)
    (single,) = skus_on_shard(store.router, 0, 1, prefix="ONE")
    await stock_up(store, single, 1)
    (never,) = skus_on_shard(store.router, 0, 1, prefix="NONE")

    outcome = await reserve(0, anywhere("short", (sku, 6, None)))
    assert outcome.state is None and outcome.allocations == []
    assert [(s.sku, s.location, s.requested, s.available) for s in outcome.shortages] == [(sku, None, 6, 5)]
    # A SKU stocked at one location names it, as a line at that location would.
    one = await reserve(0, anywhere("short-one", (single, 2, None)))
    assert [(s.location, s.available) for s in one.shortages] == [("main", 1)]
    unknown = await reserve(0, anywhere("short-none", (never, 1, None)))
    assert unknown.unknown_skus == [never]
    assert await free_at(store, sku) == {"main": 2, "east": 3}
    await assert_clean_audit(databases)


async def test_one_batch_serves_in_order_and_each_request_sees_the_earlier_splits(store, databases):
    sku = await stocked(store, 1, main=2, east=2)
    outcomes = await store.reserve_batch(
        1,
        [
            anywhere("b-1", (sku, 3, None)),
            anywhere("b-2", (sku, 2, None)),  # one unit left: short
            anywhere("b-3", (sku, 1, "east")),  # the named line takes it
            anywhere("b-4", (sku, 1, None)),  # nothing left
        ],
    )
    assert split(outcomes[0]) == {(sku, "main", 2), (sku, "east", 1)}
    assert outcomes[1].state is None and outcomes[1].shortages[0].available == 1
    assert split(outcomes[2]) == {(sku, "east", 1)}
    assert outcomes[3].state is None and outcomes[3].shortages[0].available == 0
    assert await free_at(store, sku) == {"main": 0, "east": 0}
    await assert_clean_audit(databases)


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "locations",
    [("main", None), (None, "east"), (None, None)],
    ids=["named-then-any", "any-then-named", "twice"],
)
async def test_a_sku_both_with_and_without_a_location_is_refused_before_anything_moves(store, locations):
    sku = await stocked(store, 0, main=5)
    lines = [(sku, 1, loc) for loc in locations]
    with pytest.raises(ValidationError, match="without a location"):
        anywhere("bad", *lines)
    checkout = CheckoutRequest(
        order_id="bad-1",
        customer_id="c",
        payment_token="tok_success",
        lines=[CheckoutLine(sku=s, quantity=q, location=loc) for s, q, loc in lines],
    )
    assert "without a location" in (validate_checkout(checkout) or "")
    assert await free_at(store, sku) == {"main": 5}


# --- races ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [PRIORITY, MOST], ids=["priority", "most_available"])
async def test_many_orders_race_over_three_locations_and_hold_exactly_the_stock(
    store, databases, reserve, policy
):
    sku = await stocked(store, 0, main=7, east=11, west=13)  # 31 units
    orders = [anywhere(f"race-{n}", (sku, 2, None), policy=policy) for n in range(60)]
    random.shuffle(orders)
    outcomes = await asyncio.gather(*(reserve(0, o) for o in orders))

    held = [o for o in outcomes if o.state is HoldState.HELD]
    short = [o for o in outcomes if o.state is None]
    # Splitting pools the locations: every order of 2 fits while 2 units are left anywhere.
    assert len(held) == 15 and len(short) == 45
    assert all(sum(a.quantity for a in o.allocations) == 2 for o in held)
    assert all(o.allocations == [] and o.shortages[0].available <= 1 for o in short)
    levels = {lv.location: lv for lv in await store.get(sku)}
    assert sum(lv.reserved for lv in levels.values()) == 30
    assert all(0 <= lv.reserved <= lv.on_hand for lv in levels.values())
    # The pieces the outcomes report are exactly the rows the shard holds.
    per_location: Counter[str] = Counter()
    for o in held:
        for a in o.allocations:
            per_location[a.location] += a.quantity
    assert dict(per_location) == {loc: lv.reserved for loc, lv in levels.items() if lv.reserved}
    report = await assert_clean_audit(databases)
    assert sum(s.held_reservations for s in report.shards) == sum(len(o.allocations) for o in held)


async def test_the_same_allocated_order_twenty_times_applies_once_and_replays_its_split(
    store, databases, reserve
):
    sku = await stocked(store, 1, main=2, east=2, west=2)
    order = anywhere("dup-alloc", (sku, 5, None))
    outcomes = await asyncio.gather(*(reserve(1, order) for _ in range(20)))
    assert all(o.state is HoldState.HELD for o in outcomes)
    assert sum(not o.replayed for o in outcomes) == 1
    first = split(outcomes[0])
    assert first == {(sku, "main", 2), (sku, "east", 2), (sku, "west", 1)}
    assert all(split(o) == first for o in outcomes)
    # A replay after more stock arrived still answers the split it made, and changes nothing.
    await stock_up(store, sku, 10, "east")
    again = await reserve(1, order)
    assert again.replayed and split(again) == first
    assert sum(lv.reserved for lv in await store.get(sku)) == 5
    await assert_clean_audit(databases)


async def test_an_order_is_all_or_nothing_across_allocated_and_named_lines(store, databases, reserve):
    a = await stocked(store, 0, main=2, east=2)
    (b,) = skus_on_shard(store.router, 0, 1, prefix="B")
    await stock_up(store, b, 1, "east")
    outcome = await reserve(0, anywhere("aon", (a, 4, None), (b, 2, "east")))
    assert outcome.state is None
    assert [(s.sku, s.location, s.available) for s in outcome.shortages] == [(b, "east", 1)]
    assert await free_at(store, a) == {"main": 2, "east": 2}
    ok = await reserve(0, anywhere("aon-2", (a, 4, None), (b, 1, "east")))
    assert split(ok) == {(a, "main", 2), (a, "east", 2), (b, "east", 1)}
    await assert_clean_audit(databases)


async def test_allocated_and_named_lines_over_the_same_rows_in_random_orders_never_deadlock(
    store, databases, reserve
):
    a, b, c = skus_on_shard(store.router, 0, 3, prefix="DLA")
    for sku in (a, b, c):
        for location in ("east", "main", "west"):
            await stock_up(store, sku, 500, location)
    rng = random.Random(12)

    async def one(n: int) -> None:
        locations = [rng.choice([None, "east", "main", "west"]) for _ in range(3)]
        lines = list(zip((a, b, c), (rng.randint(1, 4) for _ in range(3)), locations, strict=True))
        rng.shuffle(lines)
        order = anywhere(f"dla-{n}", *lines, policy=rng.choice([PRIORITY, MOST]))
        outcome = await reserve(0, order)
        assert outcome.state is HoldState.HELD
        if n % 3 == 0:
            await store.release(0, order.order_id, order.lines)
        elif n % 3 == 1:
            pieces = [
                StockLine(sku=p.sku, location=p.location, quantity=p.quantity) for p in outcome.allocations
            ]
            await store.pin(0, order.order_id, pieces)
            await store.commit(0, order.order_id)

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(150))), timeout=120)
    report = await assert_clean_audit(databases)
    assert sum(s.held_reservations for s in report.shards) > 0


# --- the life of a split hold -------------------------------------------------------------------------------


async def test_pin_commit_and_release_follow_every_piece(store, databases, reserve):
    sku = await stocked(store, 0, main=2, east=2, west=2)
    sold = await reserve(0, anywhere("life-sold", (sku, 5, None)))
    pieces = [StockLine(sku=p.sku, location=p.location, quantity=p.quantity) for p in sold.allocations]
    pinned = await store.pin(0, "life-sold", pieces)
    assert pinned.moved_lines == 3
    committed = await store.commit(0, "life-sold")
    assert committed.moved_lines == 3 and committed.state is HoldState.COMMITTED
    assert {lv.location: (lv.on_hand, lv.reserved) for lv in await store.get(sku)} == {
        "main": (0, 0),
        "east": (0, 0),
        "west": (1, 0),
    }
    await stock_up(store, sku, 4, "east")
    freed = await reserve(0, anywhere("life-freed", (sku, 5, None)))
    assert split(freed) == {(sku, "east", 4), (sku, "west", 1)}
    released = await store.release(0, "life-freed", list(anywhere("x", (sku, 5, None)).lines))
    assert released.moved_lines == 2 and released.state is HoldState.RELEASED
    assert await free_at(store, sku) == {"main": 0, "east": 4, "west": 1}
    await assert_clean_audit(databases)


async def test_pin_refuses_when_one_piece_of_a_split_line_is_gone(store, databases, reserve):
    sku = await stocked(store, 1, main=1, east=1)
    outcome = await reserve(1, anywhere("gone", (sku, 2, None)))
    pieces = [StockLine(sku=p.sku, location=p.location, quantity=p.quantity) for p in outcome.allocations]
    assert len(pieces) == 2
    # Counting pieces, not lines: a pin for more pieces than the order holds is refused.
    with pytest.raises(ReservationClosed):
        await store.pin(1, "gone", [*pieces, StockLine(sku=sku, location="west", quantity=1)])
    await store.pin(1, "gone", pieces)
    await assert_clean_audit(databases)


async def test_a_release_before_the_allocated_reserve_fences_it_out(store, databases, reserve):
    sku = await stocked(store, 0, main=3, east=3)
    order = anywhere("fenced", (sku, 4, None))
    first = await store.release(0, "fenced", order.lines)
    assert first.moved_lines == 0
    late = await reserve(0, order)
    assert late.state is HoldState.RELEASED and late.replayed
    assert await free_at(store, sku) == {"main": 3, "east": 3}
    await assert_clean_audit(databases)


async def test_named_locations_answer_exactly_as_before(store, reserve):
    sku = await stocked(store, 0, main=3, east=3)
    outcome = await reserve(0, anywhere("named", (sku, 2, "east")))
    assert outcome.allocations == [Allocation(sku=sku, location="east", quantity=2)]
    short = await reserve(0, anywhere("named-short", (sku, 4, "main")))
    assert [(s.location, s.requested, s.available) for s in short.shortages] == [("main", 4, 3)]
