"""A SKU's ledger newest first, and low stock across both shards: the store under concurrent stock
changes, exact pages, GET /v1/stock/{sku}/movements and GET /v1/stock?below=N over real HTTP, and the
``invsaga stock history|low`` commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from invsaga.domain.errors import InvalidInput, UnknownSku
from invsaga.domain.stock import HoldState
from invsaga.store.page_cursor import encode_cursor
from invsaga.store.stock_history import low_stock, stock_movements
from tests.helpers import assert_clean_audit, request, rows_on_every_shard, skus_on_shard, stock_up
from tests.integration.api_fixtures import ADMIN, CHECKOUT, assert_problem

pytestmark = pytest.mark.usefixtures("clean_shards")

INVSAGA = Path(sys.executable).with_name("invsaga")


async def whole_history(databases, sku: str, *, limit: int, location: str | None = None) -> list:
    seen, cursor = [], None
    while True:
        page = await stock_movements(databases, sku, location=location, cursor=cursor, limit=limit)
        seen += page.items
        if page.next_cursor is None:
            return seen
        assert len(page.items) == limit
        cursor = page.next_cursor


async def test_history_is_the_ledger_newest_first_with_reasons_references_and_deltas(store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1, prefix="HIST")
    await store.receive(sku, "main", 10, idempotency_key="po-1", reference="PO-1")
    await store.receive(sku, "east", 4, idempotency_key="po-2", reference="PO-2")
    [main] = [lv for lv in await store.get(sku) if lv.location == "main"]
    await store.adjust(
        sku, "main", 8, expected_version=main.version, idempotency_key="count-1", reference="count"
    )
    assert (await store.reserve(1, request("ord-h1", (sku, 3)))).state is HoldState.HELD
    await store.commit(1, "ord-h1")

    everything = await whole_history(databases, sku, limit=2)
    east = await whole_history(databases, sku, limit=50, location="east")

    assert [(m.reason, m.location, m.delta_on_hand, m.delta_reserved, m.reference) for m in everything] == [
        ("commit", "main", -3, -3, "ord-h1"),
        ("reserve", "main", 0, 3, "ord-h1"),
        ("adjust", "main", -2, 0, "count"),
        ("receive", "east", 4, 0, "PO-2"),
        ("receive", "main", 10, 0, "PO-1"),
    ]
    ids = [m.id for m in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    assert [m.reference for m in east] == ["PO-2"]
    assert all(m.sku == sku and m.created_at.tzinfo is not None for m in everything)


async def test_history_pages_stay_exact_while_reservations_race(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="RACE")
    await stock_up(store, sku, 25)
    orders = [f"ord-race-{n}" for n in range(40)]

    async def reserve(order_id: str):
        return await store.reserve(0, request(order_id, (sku, 1)))

    async def read_while_racing() -> list:
        pages = []
        for _ in range(10):
            pages.append(await whole_history(databases, sku, limit=3))
            await asyncio.sleep(0)
        return pages

    *outcomes, walks = await asyncio.gather(*(reserve(o) for o in orders), read_while_racing())

    held = [o for o in outcomes if o.state is HoldState.HELD]
    assert len(held) == 25  # exactly the stock, never more
    final = await whole_history(databases, sku, limit=4)
    assert [m.reason for m in final] == ["reserve"] * 25 + ["receive"]
    assert sorted(m.reference for m in final[:25]) == sorted(o.order_id for o in held)
    for walk in walks:  # every walk during the race: newest first, nothing twice
        ids = [m.id for m in walk]
        assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (25, 25)
    await assert_clean_audit(databases)


async def test_history_refuses_unknown_skus_and_bad_cursors(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="HIST")
    await stock_up(store, sku, 1)
    with pytest.raises(UnknownSku):
        await stock_movements(databases, "NEVER-STOCKED")
    with pytest.raises(UnknownSku):
        await stock_movements(databases, sku, location="nowhere")
    for cursor in (
        "garbage",
        encode_cursor("x"),
        encode_cursor(-1),
        encode_cursor(2**63),
        encode_cursor(True),
    ):
        with pytest.raises(InvalidInput, match="cursor"):
            await stock_movements(databases, sku, cursor=cursor)
    with pytest.raises(InvalidInput, match="limit"):
        await stock_movements(databases, sku, limit=0)
    past_the_end = await stock_movements(databases, sku, cursor=encode_cursor(1))
    assert past_the_end.items == [] and past_the_end.next_cursor is None


async def low_stock_walk(databases, below: int, limit: int) -> list[tuple[str, str, int]]:
    seen, cursor = [], None
    while True:
        page = await low_stock(databases, below, cursor=cursor, limit=limit)
        seen += [(r.sku, r.location, r.available) for r in page.items]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_low_stock_is_exact_across_both_shards_after_racing_reservations(store, databases):
    # Interleaved across the shards, so the pages must merge them; upper- and lower-case locations,
    # which a linguistic collation would sort apart from Python.
    tag = uuid.uuid4().hex[:6]
    candidates = [f"LOW-{tag}-{n:02d}" for n in range(40)]
    skus = [s for s in candidates if store.router.shard_of(s) == 0][:4]
    skus += [s for s in candidates if store.router.shard_of(s) == 1][:4]
    assert len(skus) == 8
    for n, sku in enumerate(skus):
        await stock_up(store, sku, 4 + n)
        await stock_up(store, sku, 2, location="east" if n % 2 else "West")
    # Every SKU's main row is raced by more buyers than it has units.
    buyers = [(sku, f"ord-low-{n}-{b}") for n, sku in enumerate(skus) for b in range(12)]

    async def buy(sku: str, order_id: str) -> None:
        await store.reserve(store.router.shard_of(sku), request(order_id, (sku, 1)))

    await asyncio.gather(*(buy(sku, order_id) for sku, order_id in buyers))

    rows = await rows_on_every_shard(
        databases, "SELECT sku, location, on_hand - reserved AS available FROM stock_levels"
    )
    expected = sorted((r.sku, r.location, r.available) for r in rows if r.available < 2)
    assert len(expected) == len(skus) and all(a == 0 for _, _, a in expected)  # every main row sold out
    assert await low_stock_walk(databases, 2, limit=3) == expected
    at_three = await low_stock_walk(databases, 3, limit=2)
    assert at_three == sorted((r.sku, r.location, r.available) for r in rows if r.available < 3)
    assert len(at_three) == 2 * len(skus)
    assert await low_stock_walk(databases, 1, limit=100) == expected
    await assert_clean_audit(databases)


async def test_low_stock_refuses_a_bad_threshold_or_cursor(databases):
    for below in (0, -1, 2**63):
        with pytest.raises(InvalidInput, match="below"):
            await low_stock(databases, below)
    with pytest.raises(InvalidInput, match="cursor"):
        await low_stock(databases, 5, cursor=encode_cursor(1))


# --- over HTTP -----------------------------------------------------------------------------------


async def test_movements_and_low_stock_over_http(http, store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1, prefix="HTTP")
    for n in range(5):
        await store.receive(sku, "main", 1, idempotency_key=f"po-{n}", reference=f"PO-{n}")
    (other,) = skus_on_shard(store.router, 0, 1, prefix="HTTP")
    await stock_up(store, other, 40)

    first = await http.get(f"/v1/stock/{sku}/movements", params={"limit": 3}, headers=CHECKOUT)
    second = await http.get(
        f"/v1/stock/{sku}/movements",
        params={"limit": 3, "cursor": first.json()["next_cursor"]},
        headers=ADMIN,
    )
    low = await http.get("/v1/stock", params={"below": 10}, headers=CHECKOUT)
    batch = await http.get("/v1/stock", params={"sku": [sku, "NEVER"]}, headers=CHECKOUT)

    assert first.status_code == second.status_code == 200, first.text
    refs = [m["reference"] for m in first.json()["items"] + second.json()["items"]]
    assert refs == [f"PO-{n}" for n in range(4, -1, -1)] and second.json()["next_cursor"] is None
    assert set(first.json()["items"][0]) == {
        "id", "sku", "location", "delta_on_hand", "delta_reserved", "reason", "reference", "created_at"
    }  # fmt: skip
    assert low.json() == {
        "items": [{"sku": sku, "location": "main", "on_hand": 5, "reserved": 0, "available": 5}],
        "next_cursor": None,
    }
    assert batch.json()["unknown"] == ["NEVER"] and batch.json()["items"][0]["total"]["on_hand"] == 5


async def test_bad_stock_reads_are_problems(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="HTTP")
    await stock_up(store, sku, 3)
    for params in (
        {},
        {"sku": sku, "below": 5},
        {"below": 0},
        {"below": "many"},
        {"below": 5, "cursor": "garbage"},
        {"below": 5, "limit": 0},
        {"sku": sku, "cursor": encode_cursor(sku, "main")},
    ):
        assert_problem(await http.get("/v1/stock", params=params, headers=CHECKOUT), 422, "invalid-input")
    for params in ({"cursor": "garbage"}, {"limit": 501}, {"location": "bad location"}):
        response = await http.get(f"/v1/stock/{sku}/movements", params=params, headers=CHECKOUT)
        assert_problem(response, 422, "invalid-input")
    assert_problem(await http.get("/v1/stock/NEVER-STOCKED/movements", headers=CHECKOUT), 404, "unknown-sku")
    assert_problem(await http.get(f"/v1/stock/{sku}/movements"), 401, "unauthorized")
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved, level.version) == (3, 0, 1)  # nothing changed


# --- the commands ----------------------------------------------------------------------------------


async def run_cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    env |= {"INVSAGA_SHARD_DSNS": ",".join(settings.shard_dsns), "INVSAGA_CORE_DSN": settings.core_dsn}
    done = await asyncio.to_thread(
        subprocess.run, [str(INVSAGA), *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


async def test_stock_history_and_low_commands(settings, store):
    import json

    (sku,) = skus_on_shard(store.router, 1, 1, prefix="CLI")
    for n in range(3):
        await store.receive(sku, "main", 2, idempotency_key=f"po-{uuid.uuid4()}", reference=f"PO-{n}")

    history, low_table, zero, unknown = await asyncio.gather(
        run_cli(settings, "stock", "history", sku, "--limit", "2", "--json"),
        run_cli(settings, "stock", "low", "--below", "7"),
        run_cli(settings, "stock", "low", "--below", "0"),
        run_cli(settings, "stock", "history", "NEVER-STOCKED"),
    )

    assert history.returncode == 0, history.stderr
    shown = json.loads(history.stdout)
    assert [m["reference"] for m in shown["items"]] == ["PO-2", "PO-1"] and shown["next_cursor"]
    assert [line.split() for line in low_table.stdout.splitlines()[1:]] == [[sku, "main", "6", "0", "6"]]
    assert zero.returncode == 2 and "below must be from 1" in one_error_line(zero)
    assert unknown.returncode == 3 and "NEVER-STOCKED" in one_error_line(unknown)
