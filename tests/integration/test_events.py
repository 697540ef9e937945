"""The stock event outbox: every stock change writes its events in its own transaction, the relay's
stamp orders them, and the pull feed pages through them by cursor."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from invsaga.domain.errors import InvalidInput, VersionConflict
from invsaga.domain.events import FeedCursor
from invsaga.events import outbox
from invsaga.events.feed import read_feed
from invsaga.events.outbox import sources_of
from invsaga.store.bulk_import import import_stock
from tests.helpers import request, skus_on_shard, stock_up

pytestmark = pytest.mark.usefixtures("clean_shards")


async def stamp_all(databases) -> None:
    for source in sources_of(databases):
        async with source.engine.connect() as conn:
            while await outbox.stamp(conn, source, batch=1000):
                pass


async def events_of(databases, shard: int, *skus: str) -> list[tuple]:
    async with databases.shards[shard].connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT type, sku, location, on_hand, reserved, available, version, reason, reference"
                " FROM stock_events WHERE sku = ANY (:skus) ORDER BY id"
            ),
            {"skus": list(skus)},
        )
        return [tuple(row) for row in rows]


def changed(rows: list[tuple]) -> list[tuple]:
    """(reason, on_hand, reserved, version) of the stock.changed rows."""
    return [(r[7], r[3], r[4], r[6]) for r in rows if r[0] == "stock.changed"]


async def test_every_stock_operation_writes_its_events_with_the_state_after_it(store, databases, reserve):
    sku, other = skus_on_shard(store.router, 0, 2)
    await stock_up(store, sku, 5)
    await stock_up(store, other, 9)
    await reserve(0, request("ev-1", (sku, 2)))
    await store.commit(0, "ev-1")
    await reserve(0, request("ev-2", (sku, 1)))
    await store.release(0, "ev-2")
    await reserve(0, request("ev-3", (sku, 3)))
    async with databases.shards[0].begin() as conn:
        await conn.execute(
            text("UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE order_id = 'ev-3'")
        )
    assert await store.expire_all(0) == 1
    [level] = await store.get(sku)
    await store.adjust(sku, "main", 7, expected_version=level.version, idempotency_key=f"adj-{uuid.uuid4()}")
    await import_stock(databases, ["sku,location,quantity\n", f"{sku},main,4\n", f"{other},main,9\n"])

    rows = await events_of(databases, 0, sku)
    assert changed(rows) == [
        ("receive", 5, 0, 1),
        ("reserve", 5, 2, 2),
        ("commit", 3, 0, 3),
        ("reserve", 3, 1, 4),
        ("release", 3, 0, 5),
        ("reserve", 3, 3, 6),
        ("expire", 3, 0, 7),
        ("adjust", 7, 0, 8),
        ("import", 4, 0, 9),
    ]
    assert all(r[5] == r[3] - r[4] for r in rows)
    # The import left `other` as it was: no change, so no event.
    assert changed(await events_of(databases, 0, other)) == [("receive", 9, 0, 1)]
    reserve_rows = [r for r in rows if r[7] == "reserve"]
    assert {r[8] for r in reserve_rows} == {"ev-1", "ev-2", "ev-3"}


async def test_sold_out_and_back_in_stock_follow_the_change_that_crossed_zero(store, databases, reserve):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 2)
    await reserve(1, request("so-1", (sku, 2)))
    await store.release(1, "so-1")
    await reserve(1, request("so-2", (sku, 1)))
    types = [(r[0], r[7]) for r in await events_of(databases, 1, sku)]
    assert types == [
        ("stock.changed", "receive"),
        ("stock.back_in_stock", "receive"),
        ("stock.changed", "reserve"),
        ("stock.sold_out", "reserve"),
        ("stock.changed", "release"),
        ("stock.back_in_stock", "release"),
        ("stock.changed", "reserve"),
    ]


async def test_a_change_that_does_not_commit_writes_no_event(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 3)
    with pytest.raises(VersionConflict):
        await store.adjust(sku, "main", 1, expected_version=9, idempotency_key="adj-stale")
    async with databases.shards[0].connect() as conn:
        await conn.execute(
            text(
                "WITH s AS (UPDATE stock_levels SET on_hand = on_hand + 1, version = version + 1"
                " WHERE sku = :sku RETURNING sku, location)"
                " INSERT INTO stock_movements (sku, location, delta_on_hand, delta_reserved, reason,"
                " reference, idempotency_key) SELECT sku, location, 1, 0, 'adjust', 'x', 'rolled-back' FROM s"
            ),
            {"sku": sku},
        )
        assert len(await events_of(databases, 0, sku)) == 2  # visible to others only once committed
        await conn.rollback()
    assert changed(await events_of(databases, 0, sku)) == [("receive", 3, 0, 1)]


async def test_the_feed_pages_every_source_by_cursor_and_filters_by_type(store, databases):
    await stamp_all(databases)
    start = await read_feed(databases, FeedCursor(), limit=1000)
    while start.events:
        start = await read_feed(databases, FeedCursor.decode(start.next_cursor), limit=1000)
    skus = [skus_on_shard(store.router, shard, 1)[0] for shard in range(len(databases.shards))]
    for sku in skus:
        await stock_up(store, sku, 1)
    await stamp_all(databases)

    seen, cursor = [], start.next_cursor
    for _ in range(10):
        page = await read_feed(databases, FeedCursor.decode(cursor), limit=3)
        assert len(page.events) <= 3
        seen += page.events
        cursor = page.next_cursor
    assert sorted(e.data["sku"] for e in seen if e.type == "stock.changed") == sorted(skus)
    assert len({e.id for e in seen}) == len(seen) == 2 * len(skus)  # changed + back_in_stock each
    for source in {e.source for e in seen}:
        sequences = [e.sequence for e in seen if e.source == source]
        assert sequences == sorted(sequences) and sequences == list(
            range(sequences[0], sequences[0] + len(sequences))
        )
    assert (await read_feed(databases, FeedCursor.decode(cursor), limit=3)).events == []

    only = await read_feed(
        databases, FeedCursor.decode(start.next_cursor), limit=100, types=["stock.back_in_stock"]
    )
    assert {e.type for e in only.events} == {"stock.back_in_stock"} and len(only.events) == len(skus)
    again = await read_feed(
        databases, FeedCursor.decode(only.next_cursor), limit=100, types=["stock.back_in_stock"]
    )
    assert again.events == []


@pytest.mark.parametrize("bad", ["%%%", "bm90IGpzb24", "WzFd", "eyJhIjotMX0"])
def test_a_cursor_the_api_did_not_make_is_refused(bad):
    with pytest.raises(InvalidInput, match="not a cursor"):
        FeedCursor.decode(bad)
