"""Small helpers shared by the integration tests."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

from invsaga.client import CheckoutClient
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.store.audit import AuditReport, audit
from invsaga.store.databases import Databases
from invsaga.store.routing import ShardRouter
from invsaga.store.stock import StockStore


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


HISTORIES = Path(__file__).parent / "histories"


async def keep_history(client: CheckoutClient, order_id: str, name: str) -> None:
    """Save the checkout's history for the replay tests when INVSAGA_RECORD_HISTORIES is set."""
    if not os.environ.get("INVSAGA_RECORD_HISTORIES"):
        return
    history = await client.handle(order_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
