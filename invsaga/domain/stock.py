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
    #: None: the reserve allocates the line over the SKU's locations (``AllocationPolicy``).
    location: Location | None = DEFAULT_LOCATION

    @property
    def key(self) -> tuple[str, str]:
        """Sort and identity key; an allocated line sorts before any location of its SKU."""
        return (self.sku, self.location or "")


def check_distinct_lines(lines: list[StockLine]) -> None:
    """Two lines for one (sku, location) are ambiguous under idempotency; ask callers to merge them.

    A line without a location may take units from any location of its SKU, so no other line may name
    that SKU: the two would compete for the same rows and their pieces would share reservation keys.
    """
    seen: set[tuple[str, str]] = set()
    allocated: set[str] = set()
    named: set[str] = set()
    for line in lines:
        if line.sku in allocated or (line.location is None and line.sku in named):
            raise ValueError(
                f"sku {line.sku!r} has a line without a location and another line: merge them into one"
            )
        if line.key in seen:
            raise ValueError(f"duplicate line for sku {line.sku!r} at location {line.location!r}")
        seen.add(line.key)
        (allocated if line.location is None else named).add(line.sku)


class AllocationStrategy(StrEnum):
    """How a line without a location picks its locations."""

    #: The configured locations first, in their order; the others after them, by name.
    PRIORITY = "priority"
    #: The location with the most available units first; ties by name.
    MOST_AVAILABLE = "most_available"


class AllocationPolicy(Model):
    """The rule a reserve applies to lines without a location. A line goes to the first location (in
    the strategy's order) that can fill it alone, and is split in that order only when none can."""

    strategy: AllocationStrategy = AllocationStrategy.PRIORITY
    priority: tuple[Location, ...] = (DEFAULT_LOCATION,)


class Allocation(Model):
    """Units of one line held (or sold) at one location: one reservation row."""

    sku: str
    location: str
    quantity: int


class ReserveRequest(Model):
    """Hold ``lines`` for ``order_id``. The order id is the idempotency key of the hold."""

    order_id: OrderId
    lines: Annotated[list[StockLine], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    ttl_seconds: Annotated[int, Field(gt=0, le=7 * 24 * 3600)] = 900
    allocation: AllocationPolicy = AllocationPolicy()

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
    #: None for a line without a location over a SKU stocked at several: ``available`` is their sum.
    location: str | None
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
    #: Where the held units are, one entry per reservation row (sku, location): a line without a
    #: location may be split. Empty when nothing was held, and in answers recorded before allocation.
    allocations: list[Allocation] = []

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
