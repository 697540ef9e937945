"""What the API reads and answers.

Request bodies are strict (no coercion, no unknown fields) and reuse the domain's field types, so the
OpenAPI document states the same rules the domain enforces. The examples ``/docs`` shows for each model are
in ``invsaga.api.examples``; the base classes put them in the schema.
"""

from __future__ import annotations

from typing import Annotated, Self

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from invsaga.api.examples import add_examples
from invsaga.domain.checkout import (
    CheckoutLine,
    CheckoutRequest,
    CheckoutResult,
    CheckoutStatus,
    CheckoutView,
    RejectReason,
    validate_checkout,
)
from invsaga.domain.stock import (
    MAX_LINES_PER_ORDER,
    MAX_ORDER_ID_LENGTH,
    MAX_SKU_LENGTH,
    ORDER_ID_PATTERN,
    Allocation,
    Location,
    OrderId,
    Quantity,
    Shortage,
    Sku,
    StockLevel,
)
from invsaga.store.bulk_import import ImportResult
from invsaga.store.stock_csv import RejectedRow

#: A SKU or location in a URL path: the domain's code rule less '/', which would split the segment.
#: SKUs containing '/' are read through the batch form, ``GET /v1/stock?sku=...``.
PATH_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
PathCode = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SKU_LENGTH, pattern=PATH_CODE_PATTERN)
]
PathSku = Annotated[PathCode, Path(description="The SKU code.", examples=["MUG-BLUE"])]
#: The domain's one order-id rule, so every order id a body accepts can be followed by its path.
PathOrderCode = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ORDER_ID_LENGTH, pattern=ORDER_ID_PATTERN)
]

MAX_BATCH_SKUS = 100
#: Bounds that keep on_hand far inside Postgres' bigint whatever the order of receipts and sets.
MAX_ON_HAND = 10**15
MAX_RECEIPT = 10**9

PaymentToken = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Text = Annotated[str, StringConstraints(max_length=500)]


class Answer(BaseModel):
    """A body the API answers with; its example, if it has one, is in ``invsaga.api.examples``."""

    model_config = ConfigDict(json_schema_extra=add_examples)


class Strict(BaseModel):
    """A body the API reads; its example, if it has one, is in ``invsaga.api.examples``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, json_schema_extra=add_examples)


# --- stock --------------------------------------------------------------------------------------------


class LocationStock(Answer):
    location: str
    on_hand: int
    reserved: int
    available: int
    #: Send it back as If-Match to set this location's stock.
    version: int

    @classmethod
    def of(cls, level: StockLevel) -> LocationStock:
        return cls(
            location=level.location,
            on_hand=level.on_hand,
            reserved=level.reserved,
            available=level.available,
            version=level.version,
        )


class StockTotals(Answer):
    on_hand: int
    reserved: int
    available: int


class StockView(Answer):
    sku: str
    locations: list[LocationStock]
    total: StockTotals

    @classmethod
    def of(cls, sku: str, levels: list[StockLevel]) -> StockView:
        return cls(
            sku=sku,
            locations=[LocationStock.of(level) for level in levels],
            total=StockTotals(
                on_hand=sum(level.on_hand for level in levels),
                reserved=sum(level.reserved for level in levels),
                available=sum(level.available for level in levels),
            ),
        )


class StockBatch(Answer):
    items: list[StockView]
    #: Requested SKUs with no stock row on any location.
    unknown: list[str]
    #: Requested SKUs whose shard did not answer: ask again later. The other SKUs are still answered.
    unavailable: list[str] = []


class SetStock(Strict):
    on_hand: Annotated[int, Field(ge=0, le=MAX_ON_HAND, description="The new on_hand, at least reserved.")]


class Receipt(Strict):
    quantity: Annotated[int, Field(gt=0, le=MAX_RECEIPT)]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "receipt"


class ImportReport(Answer):
    batch_id: str
    rows_read: int
    #: Rows that changed a stock level (the CLI's `applied` too).
    applied: int
    #: Rows already at their quantity.
    unchanged: int
    #: Rows refused one by one (below what is reserved), each with its CSV line number.
    rejected: list[RejectedRow]
    seconds: float

    @classmethod
    def of(cls, result: ImportResult) -> ImportReport:
        return cls(
            batch_id=result.batch_id,
            rows_read=result.rows_read,
            applied=result.applied,
            unchanged=result.unchanged,
            rejected=result.rejected,
            seconds=result.seconds,
        )


# --- checkouts -----------------------------------------------------------------------------------------


class CheckoutLineIn(Strict):
    sku: Sku
    quantity: Quantity
    location: Annotated[
        Location | None,
        Field(
            description="Omit it to let the order be allocated (and split, when no single location can "
            "fill the line) over the SKU's locations; a SKU without a location takes only this one line."
        ),
    ] = None


class CheckoutIn(Strict):
    order_id: OrderId
    customer_id: OrderId
    lines: Annotated[list[CheckoutLineIn], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    payment_token: Annotated[PaymentToken, Field(description="A payment-provider token; tok_success in dev.")]
    currency: Currency = "USD"

    @model_validator(mode="after")
    def _valid_checkout(self) -> Self:
        # The domain's own rules (distinct lines and whatever it adds later), so 422 means "never started".
        problem = validate_checkout(self.to_domain())
        if problem:
            raise ValueError(problem)
        return self

    def to_domain(self) -> CheckoutRequest:
        return CheckoutRequest(
            order_id=self.order_id,
            customer_id=self.customer_id,
            lines=[CheckoutLine(**line.model_dump()) for line in self.lines],
            payment_token=self.payment_token,
            currency=self.currency,
        )


class CheckoutLinks(Answer):
    #: Follow the checkout here.
    self: str
    cancel: str

    @classmethod
    def of(cls, order_id: str) -> CheckoutLinks:
        return cls(self=checkout_path(order_id), cancel=f"{checkout_path(order_id)}/cancel")


def checkout_path(order_id: str) -> str:
    return f"/v1/checkouts/{order_id}"


class CheckoutAccepted(Answer):
    """Stock is held for the order; payment and confirmation continue in the background."""

    order_id: str
    status: CheckoutStatus
    held: bool
    #: Where the units are held, one entry per (sku, location): a line without a location may be split.
    allocations: list[Allocation] = []
    links: CheckoutLinks


class CheckoutState(Answer):
    """The live state while the checkout runs (``terminal`` false), its final result after."""

    order_id: str
    status: CheckoutStatus
    terminal: bool
    customer_id: str | None = None
    reason: RejectReason | None = None
    detail: str | None = None
    shortages: list[Shortage] = []
    amount_minor: int | None = None
    currency: str | None = None
    charge_id: str | None = None
    #: Where the units were held, one entry per (sku, location); sold once CONFIRMED, released otherwise.
    allocations: list[Allocation] = []
    #: Whether the buyer pays `amount_minor`: false for an order that was rejected or cancelled (any
    #: charge it took is refunded), so a rejected order's amount never reads as money taken.
    charged: bool = False
    cancel_requested: bool = False
    links: CheckoutLinks

    @classmethod
    def of(cls, state: CheckoutResult, *, customer_id: str | None = None) -> CheckoutState:
        live = state if isinstance(state, CheckoutView) else None
        return cls(
            order_id=state.order_id,
            status=state.status,
            terminal=state.status.terminal,
            customer_id=live.customer_id if live else customer_id,
            reason=state.reason,
            detail=state.detail,
            shortages=state.shortages,
            amount_minor=state.amount_minor,
            currency=state.currency,
            charge_id=state.charge_id,
            allocations=state.allocations,
            charged=state.charge_id is not None
            and state.status not in (CheckoutStatus.REJECTED, CheckoutStatus.CANCELLED),
            cancel_requested=live.cancel_requested if live else False,
            links=CheckoutLinks.of(state.order_id),
        )


class CancelIn(Strict):
    reason: Text = "cancelled by request"


class CancelAccepted(Answer):
    """The cancel was accepted; the checkout releases its stock and refunds, then ends CANCELLED."""

    order_id: str
    accepted: bool
    status: CheckoutStatus
    #: The reason sent with the cancel; the cancelled checkout's `detail` carries it too.
    reason: str | None = None
    links: CheckoutLinks


# --- health --------------------------------------------------------------------------------------------


class Liveness(Answer):
    status: str


class Readiness(Answer):
    status: str
    #: Every dependency checked, and "ok" or why it is down.
    checks: dict[str, str]
