"""Orders written straight into the core database, for tests of reading them, and cleaned up after."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from invsaga.store.databases import Databases

_INSERT = text(
    "INSERT INTO orders (order_id, customer_id, status, amount, currency, lines, created_at, updated_at)"
    " VALUES (:order_id, :customer_id, :status, 12.50, 'USD', CAST(:lines AS jsonb),"
    " :created_at, :created_at)"
)


def order(order_id: str, customer_id: str, created_at: datetime, status: str = "confirmed") -> dict[str, Any]:
    lines = json.dumps([{"sku": "MUG-BLUE", "quantity": 1, "location": "main"}])
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "status": status,
        "lines": lines,
        "created_at": created_at,
    }


async def insert_orders(databases: Databases, rows: list[dict[str, Any]]) -> None:
    async with databases.core.begin() as conn:
        await conn.execute(_INSERT, rows)


@pytest.fixture(name="tag")
async def tag_fixture(databases: Databases) -> AsyncIterator[str]:
    """A prefix for this test's order ids; its orders are deleted afterwards, so the reconciler's tests
    never meet orders that have no checkout."""
    prefix = f"tst-{uuid.uuid4().hex[:8]}"
    yield prefix
    async with databases.core.begin() as conn:
        await conn.execute(text("DELETE FROM orders WHERE order_id LIKE :p"), {"p": f"{prefix}%"})
