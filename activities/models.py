"""Inputs and outputs of every activity: one model in, one model out."""

from __future__ import annotations

from pydantic import BaseModel

from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus, RejectReason
from invsaga.domain.stock import Allocation, AllocationPolicy, ReserveOutcome, Shortage, StockLine
from invsaga.payments.refunds import RefundOutcome as RefundOutcome  # the refund activity's result


class ShardLines(BaseModel):
    shard: int
    lines: list[StockLine]


class PrepareOrderInput(BaseModel):
    request: CheckoutRequest


class RecordedEnd(BaseModel):
    """How the order ended, as the core database has it: a workflow task that ended it can be lost
    after recording that, and its re-run ends the order the same way (workflows/checkout.py)."""

    status: CheckoutStatus
    reason: RejectReason | None = None
    shortages: list[Shortage] = []


class PreparedOrder(BaseModel):
    order_id: str
    amount_minor: int
    currency: str
    shards: list[ShardLines]
    #: Copied from the worker's settings into history, so the workflow stays deterministic.
    hold_ttl_seconds: int
    payment_deadline_seconds: int
    payment_attempt_seconds: float = 30.0
    #: How lines without a location are allocated; recorded with the order, so its retries agree.
    allocation: AllocationPolicy = AllocationPolicy()
    #: Set when the order had already ended when it was prepared.
    recorded_end: RecordedEnd | None = None


class ReserveInput(BaseModel):
    order_id: str
    shard: int
    lines: list[StockLine]
    ttl_seconds: int
    allocation: AllocationPolicy = AllocationPolicy()


def reserve_input(prepared: PreparedOrder, group: ShardLines) -> ReserveInput:
    """The reserve of the order's lines on one of its shards, with the order's hold TTL and allocation."""
    return ReserveInput(
        order_id=prepared.order_id,
        shard=group.shard,
        lines=group.lines,
        ttl_seconds=prepared.hold_ttl_seconds,
        allocation=prepared.allocation,
    )


def pin_lines(lines: list[StockLine], allocations: list[Allocation]) -> list[StockLine]:
    """What to pin on a shard: every reservation row the reserve made there (``allocations``), so that
    one missing is seen; the lines themselves for an outcome recorded before allocation."""
    if not allocations:
        return lines
    return [StockLine(sku=p.sku, location=p.location, quantity=p.quantity) for p in allocations]


class ReleaseInput(BaseModel):
    order_id: str
    shard: int
    lines: list[StockLine]


class PinInput(BaseModel):
    order_id: str
    shard: int
    #: The pieces the reserve allocated (one per reservation row), or the lines when it named none.
    lines: list[StockLine]


class CommitInput(BaseModel):
    order_id: str
    shard: int
    #: The order's lines on this shard, when known: a commit that finds nothing asks whether their
    #: slots moved away (a stale map) before refusing.
    lines: list[StockLine] = []


class ExpireOutput(BaseModel):
    expired_per_shard: list[int]
    #: Shards the sweep could not reach (0 expired there); the next scheduled run tries them again.
    unavailable_shards: list[int] = []


class ChargeInput(BaseModel):
    order_id: str
    amount_minor: int
    currency: str
    payment_token: str


class ChargeOutcome(BaseModel):
    charge_id: str
    status: str
    amount_minor: int


class RefundInput(BaseModel):
    order_id: str


class FinishOrderInput(BaseModel):
    order_id: str
    status: str
    reason: str | None = None
    #: The short lines of an order refused for want of stock.
    shortages: list[Shortage] = []
    #: The checkout does not know whether its order was recorded (the place step never answered):
    #: an order that is not there has nothing to finish.
    if_recorded: bool = False


class PlaceOrderInput(BaseModel):
    request: CheckoutRequest


class PlacedOrder(BaseModel):
    """The stock decision: the order as recorded, and what the reserve did on each of its shards."""

    prepared: PreparedOrder
    #: One outcome per entry of ``prepared.shards``, in the same order.
    reserved: list[ReserveOutcome]
    #: Why pinning was refused: a hold closed between the reserve and the pin. With a shortage or an
    #: unknown SKU nothing is pinned (the workflow refuses the order); otherwise every hold is.
    pin_refused: str | None = None


class ConfirmOrderInput(BaseModel):
    order_id: str
    #: The shards of the placement; only for a confirmation recorded before ``lines`` existed.
    shards: list[int]
    #: The order's lines: the commit goes to the shards they route to when it runs, so a hold whose
    #: slot moved since the reserve is committed where it is now.
    lines: list[StockLine] = []


class OrderRef(BaseModel):
    order_id: str


class ReleaseOrderInput(BaseModel):
    """The order's lines as the buyer sent them: each is released on the shard it routes to."""

    order_id: str
    lines: list[CheckoutLine]
