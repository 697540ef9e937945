"""Every stock operation writes the ledger keys ``invsaga.domain.keys`` defines, including the ones
built in SQL: set-based statements render them from the same functions, and reserve_stock holds the
one copy of a format outside Python."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from invsaga.domain.keys import adjustment_key, hold_movement_key, import_key, receipt_key
from invsaga.domain.stock import StockLine
from invsaga.store.bulk_import import import_stock
from tests.helpers import assert_clean_audit, request, skus_on_shard

pytestmark = pytest.mark.usefixtures("clean_shards")


async def test_each_operation_writes_its_ledger_row_under_the_key_the_domain_defines(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await store.receive(sku, "main", 10, idempotency_key="po-1")
    await store.adjust(sku, "main", 8, expected_version=1, idempotency_key="count-1")
    await store.adjust(sku, "east", 3, expected_version=0, idempotency_key="open-east")
    for order_id in ("sold", "dropped", "lapsed"):
        await store.reserve(0, request(order_id, (sku, 1)))
    await store.pin(0, "sold", [StockLine(sku=sku, quantity=1)])
    await store.commit(0, "sold")
    await store.release(0, "dropped")
    async with databases.shards[0].begin() as conn:
        await conn.execute(text("UPDATE reservations SET expires_at = now() - interval '1 second'"))
    assert await store.expire(0) == 1
    imported = await import_stock(databases, ["sku,location,quantity", f"{sku},main,50"])

    async with databases.shards[0].connect() as conn:
        ledger = await conn.execute(text("SELECT reason, idempotency_key FROM stock_movements ORDER BY id"))
    assert [tuple(row) for row in ledger.all()] == [
        ("receive", receipt_key(sku, "main", "po-1")),
        ("adjust", adjustment_key("count-1")),
        ("adjust", adjustment_key("open-east")),
        *[("reserve", hold_movement_key("reserve", o, sku, "main")) for o in ("sold", "dropped", "lapsed")],
        ("commit", hold_movement_key("commit", "sold", sku, "main")),
        ("release", hold_movement_key("release", "dropped", sku, "main")),
        ("expire", hold_movement_key("expire", "lapsed", sku, "main")),
        ("import", import_key(imported.batch_id, sku, "main")),
    ]
    await assert_clean_audit(databases)
