"""Small helpers shared by the integration tests."""

from __future__ import annotations

import itertools
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Row, text

from invsaga.client import CheckoutClient
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.store.audit import AuditReport, audit
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases
from invsaga.store.routing import ShardRouter
from invsaga.store.stock import StockStore
from invsaga.temporal.codec import PayloadKeys


def skus_on_shard(router: ShardRouter, shard: int, count: int, prefix: str = "SKU") -> list[str]:
    """Deterministic SKUs that route to ``shard``, so a test controls where its rows live."""
    tag = uuid.uuid4().hex[:6]
    found = []
    for n in itertools.count():
        sku = f"{prefix}-{tag}-{n}"
        if router.shard_of(sku) == shard:
            found.append(sku)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


async def stock_up(store: StockStore, sku: str, quantity: int, location: str = "main") -> None:
    await store.receive(sku, location, quantity, idempotency_key=f"seed-{uuid.uuid4()}")


async def in_catalog(databases: Databases, *skus: str, price: str = "12.50") -> None:
    """Each SKU in the catalog at ``price``, so stock may be received for it."""
    await upsert_products(
        databases.core, [Product(sku=s, name=f"item {s}", price=Decimal(price)) for s in skus]
    )


async def catalog(
    databases: Databases, store: StockStore, *skus_and_stock: tuple[str, int], price: str = "12.50"
) -> None:
    """Each SKU in the catalog at ``price``, with its quantity in stock."""
    await in_catalog(databases, *(s for s, _ in skus_and_stock), price=price)
    for sku, quantity in skus_and_stock:
        await stock_up(store, sku, quantity)


async def stocked_sku(
    databases: Databases, store: StockStore, quantity: int, *, shard: int = 0, prefix: str = "SKU"
) -> str:
    """A fresh SKU on ``shard``, in the catalog with ``quantity`` in stock."""
    (sku,) = skus_on_shard(store.router, shard, 1, prefix=prefix)
    await catalog(databases, store, (sku, quantity))
    return sku


def request(order_id: str, *lines: tuple[str, int], ttl: int = 900) -> ReserveRequest:
    return ReserveRequest(
        order_id=order_id,
        lines=[StockLine(sku=sku, quantity=qty) for sku, qty in lines],
        ttl_seconds=ttl,
    )


async def assert_clean_audit(databases: Databases) -> AuditReport:
    report = await audit(databases)
    assert report.violations == [], report.violations
    return report


async def rows_on_every_shard(databases: Databases, sql: str, **params: object) -> list[Row[Any]]:
    """The rows ``sql`` finds on each shard in turn, all shards' together."""
    rows: list[Row[Any]] = []
    for engine in databases.shards:
        async with engine.connect() as conn:
            rows += (await conn.execute(text(sql), params)).all()
    return rows


HISTORIES = Path(__file__).parent / "histories"
#: The key the encrypted committed histories were written under. A test key, public on purpose: the
#: replay tests must decode those histories, as a worker holding the production keys would.
HISTORY_KEYS = PayloadKeys.parse("histories-test:TOEmBY29EW7o+XGtLXMO+87MOYn5OrN7wt+/4Np2ahQ=")


#: The workflow shape today's code records (the lean ``Checkout`` type): the suffix of its histories,
#: so recording never overwrites a history of an older shape, which must keep replaying.
HISTORY_SHAPE = "lean"


async def keep_history(client: CheckoutClient, order_id: str, name: str) -> None:
    """Save the checkout's history for the replay tests when INVSAGA_RECORD_HISTORIES is set."""
    if not os.environ.get("INVSAGA_RECORD_HISTORIES"):
        return
    history = await client.handle(order_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}_{HISTORY_SHAPE}.json").write_text(history.to_json())
