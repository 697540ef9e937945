"""Inputs and outputs of every activity: one model in, one model out."""

from __future__ import annotations

from pydantic import BaseModel

from invsaga.domain.checkout import CheckoutRequest
from invsaga.domain.stock import AllocationPolicy, StockLine
from invsaga.payments.refunds import RefundOutcome as RefundOutcome  # the refund activity's result


class ShardLines(BaseModel):
    shard: int
    lines: list[StockLine]


class PrepareOrderInput(BaseModel):
    request: CheckoutRequest


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


class ReserveInput(BaseModel):
    order_id: str
    shard: int
    lines: list[StockLine]
    ttl_seconds: int
    allocation: AllocationPolicy = AllocationPolicy()


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
