"""Every idempotency key the system derives, in one place: a key's format is part of its meaning.

A retry must derive exactly the key its first attempt used, wherever the retry runs (an activity, the
reconciler, a CLI command), so each format is written once, here. The stock ledger's keys are unique in
``stock_movements``, and the store builds the keys of set-based statements in SQL from these same
functions (``invsaga.store.ledger.key_sql``), so a key function only formats its arguments.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

#: The moves of a hold, each recorded once per order and stock row.
HoldMovement = Literal["reserve", "release", "commit", "expire"]


def charge_key(order_id: str) -> str:
    """The payment provider's key for the order's one charge."""
    return f"charge-{order_id}"


def refund_key(order_id: str) -> str:
    """The payment provider's key for the refund of whatever remains of the order's charge."""
    return f"refund-{order_id}"


# --- the stock ledger ------------------------------------------------------------------------------


def hold_movement_key(movement: HoldMovement, order_id: str, sku: str, location: str) -> str:
    """The ledger key of one line of an order's hold moving: a hold moves each way at most once.

    ``reserve_stock`` (``invsaga/store/schema/definitions/shard/reserve_stock.sql``) writes the reserve
    key in PL/pgSQL, the one copy of this format outside Python; a test holds the two together.
    """
    return f"{movement}:{order_id}:{sku}:{location}"


def receipt_key(sku: str, location: str, key: str) -> str:
    """The ledger key of a receipt: the caller's key scoped to the stock row, so one purchase order's
    key can receive each of its lines."""
    return f"receive:{sku}@{location}:{key}"


def adjustment_key(key: str) -> str:
    """The ledger key of a set (compare-and-set of on_hand): the caller's key as it is."""
    return f"adjust:{key}"


def import_key(batch_id: str, sku: str, location: str) -> str:
    """The ledger key of one row of a bulk import: each batch sets each stock row at most once."""
    return f"import:{batch_id}:{sku}:{location}"


# --- the keys callers pass to the stock store ----------------------------------------------------


def adhoc_key(origin: Literal["cli", "http"], nonce: UUID) -> str:
    """The key of a set that is never retried by key (its version check already makes a retry safe):
    new for every call, and naming where the call came from."""
    return f"{origin}:{nonce}"


def api_client_key(principal_id: str, key: str) -> str:
    """An HTTP client's Idempotency-Key, scoped to the API key that sent it, so clients cannot collide."""
    return f"http:{principal_id}:{key}"


def demo_seed_key(sku: str) -> str:
    """The dev stack's receipt of its demo stock: seeding again on a restart receives nothing twice."""
    return f"demo-seed-{sku}"
