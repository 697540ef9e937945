"""The checkout saga's public models: what callers send, what they get back, what an operator sees.

Every workflow, update and query takes one model and returns one model, so fields can be added later
without breaking histories. Input is deliberately loose here and checked by ``validate_checkout``: a
workflow must reject bad input with a result, not fail to decode it and retry forever.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

from invsaga.domain.stock import (
    MAX_LINES_PER_ORDER,
    Allocation,
    CustomerId,
    OrderId,
    Shortage,
    StockLine,
    check_distinct_lines,
)

TASK_QUEUE = "inventory-saga"

# The checkout workflow's names as Temporal knows them: its contract with every client. The workflow
# declares its handlers under these names, and the client (``invsaga.client``) calls them by name, so a
# service can start checkouts without importing the workflow (and the store behind its activities).
WORKFLOW_TYPE = "Checkout"
#: The type checkouts were started under before the lean shape (two workflow tasks, see
#: ``workflows.checkout``). Workers still run it, so those checkouts finish; nothing starts new ones.
STEPWISE_WORKFLOW_TYPE = "CheckoutWorkflow"
RESERVATION_UPDATE = "reservation"
CANCEL_UPDATE = "cancel"
STATUS_QUERY = "status"


def workflow_id_for(order_id: str) -> str:
    return f"checkout-{order_id}"


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CheckoutLine(Loose):
    sku: str
    quantity: int
    #: None (omitted): the order is allocated over the SKU's locations by the configured strategy.
    location: str | None = None


class CheckoutRequest(Loose):
    order_id: str
    customer_id: str
    lines: list[CheckoutLine]
    payment_token: str
    currency: str = "USD"


class OrderSummary(Loose):
    """What one order id stands for: who buys what. A second checkout under the same id must match."""

    customer_id: str
    currency: str = "USD"
    lines: list[CheckoutLine]

    @classmethod
    def of(cls, request: CheckoutRequest) -> OrderSummary:
        lines = sorted(request.lines, key=lambda ln: (ln.sku, ln.location or ""))
        return cls(customer_id=request.customer_id, currency=request.currency, lines=lines)

    def conflict_with(self, other: OrderSummary, order_id: str) -> str | None:
        """Why ``other`` cannot be checked out under ``order_id`` when this one was, or None."""
        if other == self:
            return None
        return (
            f"order id {order_id!r} is already used by another order (customer {self.customer_id!r}, "
            f"{len(self.lines)} line(s)); use a new order id"
        )


class CheckoutStatus(StrEnum):
    PENDING = "PENDING"
    RESERVING = "RESERVING"
    PAYING = "PAYING"
    CONFIRMING = "CONFIRMING"
    COMPENSATING = "COMPENSATING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (CheckoutStatus.CONFIRMED, CheckoutStatus.REJECTED, CheckoutStatus.CANCELLED)


#: An order row's status once its checkout has ended: the terminal checkout status, in lower case.
ENDED_ORDER_STATUSES = frozenset(status.lower() for status in CheckoutStatus if status.terminal)


class RejectReason(StrEnum):
    INVALID = "invalid"
    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_TIMEOUT = "payment_timeout"
    HOLD_LOST = "hold_lost"
    UNAVAILABLE = "unavailable"


class CheckoutResult(Loose):
    order_id: str
    status: CheckoutStatus
    reason: RejectReason | None = None
    detail: str | None = None
    shortages: list[Shortage] = []
    amount_minor: int | None = None
    currency: str | None = None
    charge_id: str | None = None
    #: Where the order's units were held, one entry per (sku, location): a line without a location may
    #: be split. Sold once CONFIRMED; released again if the order ended otherwise.
    allocations: list[Allocation] = []

    @property
    def amount(self) -> str | None:
        """The amount as people read it ("50.00 USD"); prices are kept in cents."""
        return None if self.amount_minor is None else f"{self.amount_minor / 100:.2f} {self.currency}"

    @property
    def headline(self) -> str:
        """The business outcome in a few words, for the Web UI: "CONFIRMED 50.00 USD" or
        "REJECTED: out of stock" (the workflow itself shows COMPLETED either way)."""
        if self.status is CheckoutStatus.CONFIRMED and self.amount:
            return f"{self.status.value} {self.amount}"
        if self.reason is not None:
            return f"{self.status.value}: {self.reason.value.replace('_', ' ')}"
        return self.status.value


class CheckoutView(CheckoutResult):
    """The live state answered by the workflow's query while it runs."""

    customer_id: str
    cancel_requested: bool = False
    #: Set while a step that must succeed (a refund, a release, recording the order) keeps failing:
    #: the checkout retries it and an operator should look.
    attention: str | None = None


class ReservationView(Loose):
    """What update-with-start hands back: did the buyer get the units?"""

    order_id: str
    status: CheckoutStatus
    held: bool
    reason: RejectReason | None = None
    detail: str | None = None
    shortages: list[Shortage] = []
    #: Where the held units are, one entry per (sku, location).
    allocations: list[Allocation] = []
    #: True when the sold-out hint answered: no workflow was started and no row lock was taken.
    fast_path: bool = False


class CancelRequest(Loose):
    reason: str = "cancelled by request"


class CancelResult(Loose):
    order_id: str
    accepted: bool
    status: CheckoutStatus


def validate_checkout(request: CheckoutRequest, *, started_before_order_id_rule: bool = False) -> str | None:
    """Why the request cannot be checked out, or None. Uses the strict domain types as the rules."""
    problems = []
    try:
        rule = _OrderBeforeIdRule if started_before_order_id_rule else _StrictOrder
        rule.model_validate({"order_id": request.order_id, "customer_id": request.customer_id})
    except ValidationError as exc:
        problems.extend(_messages(exc))
    if not request.lines:
        problems.append("lines: at least one line is required")
    elif len(request.lines) > MAX_LINES_PER_ORDER:
        problems.append(f"lines: at most {MAX_LINES_PER_ORDER} lines per order")
    else:
        try:
            lines = [StockLine.model_validate(line.model_dump()) for line in request.lines]
            check_distinct_lines(lines)
        except ValidationError as exc:
            problems.extend(_messages(exc, prefix="lines"))
        except ValueError as exc:
            problems.append(f"lines: {exc}")
    if not request.payment_token.strip():
        problems.append("payment_token: required")
    if len(request.currency) != 3 or not request.currency.isalpha():
        problems.append("currency: a three-letter ISO code is required")
    return "; ".join(problems) or None


class _StrictOrder(BaseModel):
    order_id: OrderId
    customer_id: CustomerId


class _OrderBeforeIdRule(BaseModel):
    """The rule a checkout started before order ids lost '/' was checked by; its replay must agree."""

    order_id: CustomerId
    customer_id: CustomerId


def _messages(exc: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        out.append(f"{prefix + '.' if prefix else ''}{where}: {err['msg']}")
    return out
