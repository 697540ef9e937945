"""What the outside world is told about stock and orders: events, their ids, and the feed's cursor.

Events come from several sources, each with its own sequence: every inventory shard (``shard-<index>``)
and the core database (``core``, the order events). An event's id is ``<source>-<seq>``: stable, unique,
and what a consumer dedupes by, since delivery is at least once. A cursor is where a reader has got to
in every source, opaque to the reader.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from invsaga.domain.errors import InvalidInput

StockEventType = Literal["stock.changed", "stock.sold_out", "stock.back_in_stock"]
OrderEventType = Literal["order.confirmed", "order.rejected", "order.cancelled"]
EventType = StockEventType | OrderEventType

STOCK_EVENT_TYPES: tuple[str, ...] = ("stock.changed", "stock.sold_out", "stock.back_in_stock")
ORDER_EVENT_TYPES: tuple[str, ...] = ("order.confirmed", "order.rejected", "order.cancelled")
EVENT_TYPES: tuple[str, ...] = STOCK_EVENT_TYPES + ORDER_EVENT_TYPES

CORE_SOURCE = "core"


def shard_source(index: int) -> str:
    return f"shard-{index}"


def event_id(source: str, seq: int) -> str:
    return f"{source}-{seq}"


class Event(BaseModel):
    """One event as the feed serves it and a webhook receives it."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: EventType
    source: str
    #: Increases by one per event within ``source``; per SKU and location it follows the stock's version.
    sequence: int
    occurred_at: datetime
    #: ``stock.*``: sku, location, on_hand, reserved, available, version, reason, reference.
    #: ``order.*``: order_id, customer_id, status, amount, currency, reason, lines.
    data: dict[str, Any]


def validate_event_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"unknown event type {', '.join(map(repr, unknown))}; known: {', '.join(EVENT_TYPES)}",
            unknown=unknown,
        )
    return sorted(set(types), key=EVENT_TYPES.index)


class FeedCursor(BaseModel):
    """The last seq a reader has seen per source; a source it has not seen starts at the oldest kept."""

    model_config = ConfigDict(frozen=True)

    after: dict[str, int] = {}

    def encode(self) -> str:
        raw = json.dumps(self.after, sort_keys=True, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> FeedCursor:
        if not text:
            return cls()
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            after = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidInput("after: not a cursor this API returned") from None
        if not isinstance(after, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in after.items()
        ):
            raise InvalidInput("after: not a cursor this API returned")
        return cls(after=after)
