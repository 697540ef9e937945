"""Inputs and outputs of every activity: one model in, one model out."""

from __future__ import annotations

from pydantic import BaseModel

from invsaga.domain.checkout import CheckoutRequest
from invsaga.domain.stock import StockLine
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


class ReserveInput(BaseModel):
    order_id: str
    shard: int
    lines: list[StockLine]
    ttl_seconds: int


class ReleaseInput(BaseModel):
    order_id: str
    shard: int
    lines: list[StockLine]


class PinInput(BaseModel):
    order_id: str
    shard: int
    lines: list[StockLine]


class CommitInput(BaseModel):
    order_id: str
    shard: int


class ExpireOutput(BaseModel):
    expired_per_shard: list[int]


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
