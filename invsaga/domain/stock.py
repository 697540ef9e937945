"""Value objects for stock and reservations, validated at the edge so bad input never reaches SQL."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SKU_LENGTH = 64
MAX_LINE_QUANTITY = 10_000
MAX_LINES_PER_ORDER = 100
DEFAULT_LOCATION = "main"

_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
#: The code rule less '/': an order id is one URL path segment (``/v1/checkouts/{order_id}``), so an id
#: with '/' could be started but never followed. The API's path parameter reuses this rule.
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_ORDER_ID_LENGTH = 100

Sku = Annotated[str, Field(min_length=1, max_length=MAX_SKU_LENGTH, pattern=_CODE_PATTERN)]
Location = Annotated[str, Field(min_length=1, max_length=64, pattern=_CODE_PATTERN)]
OrderId = Annotated[str, Field(min_length=1, max_length=MAX_ORDER_ID_LENGTH, pattern=ORDER_ID_PATTERN)]
#: Customer ids never appear in a path, so they keep the general code rule.
CustomerId = Annotated[str, Field(min_length=1, max_length=MAX_ORDER_ID_LENGTH, pattern=_CODE_PATTERN)]
Quantity = Annotated[int, Field(gt=0, le=MAX_LINE_QUANTITY)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StockLine(Model):
    sku: Sku
    quantity: Quantity
    location: Location = DEFAULT_LOCATION

    @property
    def key(self) -> tuple[str, str]:
        return (self.sku, self.location)


def check_distinct_lines(lines: list[StockLine]) -> None:
    """Two lines for one (sku, location) are ambiguous under idempotency; ask callers to merge them."""
    seen: set[tuple[str, str]] = set()
    for line in lines:
        if line.key in seen:
            raise ValueError(f"duplicate line for sku {line.sku!r} at location {line.location!r}")
        seen.add(line.key)


class ReserveRequest(Model):
    """Hold ``lines`` for ``order_id``. The order id is the idempotency key of the hold."""

    order_id: OrderId
    lines: Annotated[list[StockLine], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    ttl_seconds: Annotated[int, Field(gt=0, le=7 * 24 * 3600)] = 900

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        check_distinct_lines(self.lines)
        return self


class HoldState(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


class Shortage(Model):
    sku: str
    location: str
    requested: int
    available: int

    @property
    def missing(self) -> int:
        return self.requested - self.available


class ReserveOutcome(Model):
    """What a reserve call achieved. ``state`` is None when nothing was held (see ``shortages``)."""

    order_id: str
    state: HoldState | None
    shortages: list[Shortage] = []
    #: Lines naming a stock row that does not exist on its shard (never received).
    unknown_skus: list[str] = []
    #: True when this answer replays an earlier call rather than changing stock now.
    replayed: bool = False

    @property
    def held(self) -> bool:
        return self.state in (HoldState.HELD, HoldState.COMMITTED)


class TransitionOutcome(Model):
    """Result of release, commit or expire: how many held lines moved, and the order's final state."""

    order_id: str
    moved_lines: int
    state: HoldState | None


class StockLevel(Model):
    sku: str
    location: str
    on_hand: int
    reserved: int
    version: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved
