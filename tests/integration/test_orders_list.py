"""Listing orders from the core database: keyset pages that walk every order exactly once while new
orders arrive, exact filters, refused input, and plans that stay index range scans at scale."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from invsaga.domain.errors import InvalidInput
from invsaga.settings import load_settings
from invsaga.store.databases import Databases, make_engine
from invsaga.store.migrations import migrate
from invsaga.store.order_list import list_orders, list_orders_sql
from invsaga.store.page_cursor import encode_cursor
from tests.integration.order_rows import insert_orders, order, tag_fixture  # noqa: F401 (a fixture)

STATUSES = ["pending", "reserved", "paid", "confirmed", "rejected", "cancelled"]


async def walk(databases: Databases, *, limit: int, **filters: Any) -> list[tuple[datetime, str]]:
    """Every page of a list, as (created_at, order_id) in the order the pages showed them."""
    seen: list[tuple[datetime, str]] = []
    cursor = None
    while True:
        page = await list_orders(databases, cursor=cursor, limit=limit, **filters)
        assert len(page.items) <= limit
        seen += [(o.created_at, o.order_id) for o in page.items]
        if page.next_cursor is None:
            return seen
        assert len(page.items) == limit
        cursor = page.next_cursor
        await asyncio.sleep(0)  # let the inserter in between pages


@pytest.mark.parametrize("by", ["customer", "status", "since", "all"])
async def test_a_page_walk_shows_every_existing_order_once_while_orders_are_created(databases, tag, by):
    customer = f"{tag}-cust"
    base = datetime.now(UTC) - timedelta(hours=2)
    # Three orders share each instant, so the order id must break ties for the cursor to be exact.
    existing = [
        order(f"{tag}-{n:04d}", customer, base + timedelta(seconds=n // 3), STATUSES[n % len(STATUSES)])
        for n in range(150)
    ]
    await insert_orders(databases, existing)
    since = base + timedelta(seconds=20)
    filters: dict[str, Any] = {
        "customer": {"customer_id": customer},
        "status": {"status": "paid"},
        "since": {"since": since},
        "all": {},
    }[by]

    def matches(row: dict[str, Any]) -> bool:
        if by == "customer":
            return True
        if by == "status":
            return row["status"] == "paid"
        if by == "since":
            return row["created_at"] >= since
        return True

    rng = random.Random(12)

    async def keep_creating() -> None:
        # New orders now (ahead of every cursor) and back-dated ones in the middle of the walk.
        for n in range(60):
            at = datetime.now(UTC) if n % 2 else base + timedelta(seconds=rng.uniform(0, 50))
            await insert_orders(databases, [order(f"{tag}-new-{n:03d}", customer, at, rng.choice(STATUSES))])
            await asyncio.sleep(0)

    seen, _ = await asyncio.gather(walk(databases, limit=7, **filters), keep_creating())

    ids = [order_id for _, order_id in seen]
    assert len(ids) == len(set(ids)), "an order was shown twice"
    expected = {row["order_id"] for row in existing if matches(row)}
    assert expected <= set(ids), f"skipped: {sorted(expected - set(ids))[:5]}"
    assert seen == sorted(seen, reverse=True), "not newest first"
    mine = [order_id for order_id in ids if order_id.startswith(tag)]
    assert all(order_id in expected or "-new-" in order_id for order_id in mine)


async def test_filters_combine_and_the_last_page_has_no_cursor(databases, tag):
    base = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    rows = [
        order(
            f"{tag}-a{n}", f"{tag}-alice", base + timedelta(minutes=n), "confirmed" if n % 2 else "rejected"
        )
        for n in range(6)
    ] + [order(f"{tag}-b{n}", f"{tag}-bob", base + timedelta(minutes=n), "confirmed") for n in range(3)]
    await insert_orders(databases, rows)

    confirmed = await list_orders(databases, customer_id=f"{tag}-alice", status="confirmed", limit=10)
    first = await list_orders(databases, customer_id=f"{tag}-alice", limit=3)
    second = await list_orders(databases, customer_id=f"{tag}-alice", limit=3, cursor=first.next_cursor)
    since = await list_orders(databases, customer_id=f"{tag}-alice", since=base + timedelta(minutes=4))
    naive = await list_orders(databases, customer_id=f"{tag}-alice", since=datetime(2026, 1, 5, 12, 4))
    nobody = await list_orders(databases, customer_id=f"{tag}-carol")

    assert [o.order_id for o in confirmed.items] == [f"{tag}-a5", f"{tag}-a3", f"{tag}-a1"]
    assert confirmed.next_cursor is None
    assert [o.order_id for o in first.items + second.items] == [f"{tag}-a{n}" for n in range(5, -1, -1)]
    assert first.next_cursor is not None and second.next_cursor is None  # exactly limit rows were left
    assert [o.order_id for o in since.items] == [f"{tag}-a5", f"{tag}-a4"]  # at `since` is included
    assert naive == since  # no offset means UTC
    assert nobody.items == [] and nobody.next_cursor is None
    shown = confirmed.items[0]
    assert (shown.customer_id, shown.status, str(shown.amount), shown.currency) == (
        f"{tag}-alice",
        "confirmed",
        "12.50",
        "USD",
    )
    assert [line.model_dump() for line in shown.lines] == [
        {"sku": "MUG-BLUE", "quantity": 1, "location": "main"}
    ]


@pytest.mark.parametrize(
    "filters, complaint",
    [
        ({"status": "shipped"}, "status must be one of"),
        ({"limit": 0}, "limit must be from 1 to 500"),
        ({"limit": 501}, "limit must be from 1 to 500"),
        ({"cursor": "not-a-cursor!"}, "cursor"),
        ({"cursor": encode_cursor(1, 2)}, "cursor"),  # the right shape of the wrong kinds
        ({"cursor": encode_cursor("yesterday", "ord-1")}, "cursor"),
        ({"cursor": encode_cursor("2026-01-05T12:00:00", "ord-1")}, "cursor"),  # no offset: not ours
        ({"cursor": encode_cursor("2026-01-05T12:00:00+00:00", "ord\x00")}, "cursor"),
        ({"since": datetime(1, 1, 1, tzinfo=UTC) + timedelta(hours=1)}, None),  # in range: fine
        ({"since": datetime(1, 1, 1, 0, 0, tzinfo=UTC).replace(tzinfo=None)}, None),
        ({"since": datetime.fromisoformat("0001-01-01T00:00:00+01:00")}, "since"),
    ],
)
async def test_bad_filters_are_invalid_input(databases, filters, complaint):
    if complaint is None:
        await list_orders(databases, **filters)
        return
    with pytest.raises(InvalidInput, match=complaint):
        await list_orders(databases, **filters)


# --- plans at scale ----------------------------------------------------------------------------------

ORDERS_AT_SCALE = 100_000

_FILL = """
INSERT INTO orders (order_id, customer_id, status, amount, currency, lines, created_at, updated_at)
SELECT 'ord-' || n, 'cust-' || (n % 40),
       CASE n % 100 WHEN 0 THEN 'paid' WHEN 1 THEN 'pending' WHEN 2 THEN 'rejected' ELSE 'confirmed' END,
       10, 'USD', '[{"sku": "MUG-BLUE", "quantity": 1, "location": "main"}]',
       timestamptz '2026-01-01' + n * interval '1 second', timestamptz '2026-01-01' + n * interval '1 second'
  FROM generate_series(1, :n) AS n
"""


@pytest.fixture(scope="module")
async def big_core(pg_fleet) -> AsyncIterator[Any]:
    """A core database of its own with 100k orders, analyzed, so the planner sees a table of size.

    Forty customers of 2,500 orders each: with a handful of orders per customer the planner may fetch
    them all and sort them (as cheap as it gets), which says nothing about a customer with a history.
    Statuses are skewed as a shop's are: almost every order ends confirmed, 1% are paid right now."""
    dsn = pg_fleet.core.create_database(f"orders_plans_{uuid.uuid4().hex[:8]}")
    engine = make_engine(load_settings(shard_dsns=dsn, core_dsn=dsn).core_url, pool_size=1)
    try:
        await migrate(engine, "core", label="plans")
        async with engine.begin() as conn:
            await conn.execute(text(_FILL), {"n": ORDERS_AT_SCALE})
        async with engine.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text("ANALYZE orders"))
        yield engine
    finally:
        await engine.dispose()


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.parametrize(
    "filters, params, index",
    [
        ({"customer_id": "x"}, {"customer_id": "cust-7"}, "orders_by_customer_newest"),
        ({"status": "x"}, {"status": "paid"}, "orders_by_status_newest"),
        (
            {"status": "x", "since": True},
            {"status": "paid", "since": datetime(2026, 1, 1, 20, tzinfo=UTC)},
            "orders_by_status_newest",
        ),
        ({"since": True}, {"since": datetime(2026, 1, 1, 20, tzinfo=UTC)}, "orders_newest"),
        ({}, {}, "orders_newest"),
    ],
)
@pytest.mark.parametrize("deep", [False, True])
async def test_every_list_query_is_one_index_range_scan_without_a_sort(
    big_core, filters, params, index, deep
):
    sql = list_orders_sql(after=deep, **filters)
    values = {**params, "limit": 51}
    if deep:  # a page far down the list
        values |= {"after_at": datetime(2026, 1, 1, 3, tzinfo=UTC), "after_id": "ord-10800"}
    async with big_core.connect() as conn:
        plan = (await conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), values)).scalar_one()[0]["Plan"]
    nodes = _nodes(plan)
    kinds = [node["Node Type"] for node in nodes]
    assert "Seq Scan" not in kinds and "Sort" not in kinds and "Incremental Sort" not in kinds, kinds
    scans = [node for node in nodes if "Index Name" in node]
    assert [node["Index Name"] for node in scans] == [index], kinds
    if deep:  # the cursor bounds the range scanned, rather than filtering rows read from the start
        assert "created_at" in scans[0]["Index Cond"], scans[0]


def test_the_list_knows_every_status_an_order_can_have():
    from invsaga.store.order_list import ORDER_STATUSES
    from invsaga.store.orders import STATUS_RANK

    assert set(ORDER_STATUSES) == set(STATUS_RANK)
