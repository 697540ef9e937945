"""Giving an unsold order's money back: one rule, used by the saga's compensation and the reconciler."""

from __future__ import annotations

from pydantic import BaseModel

from invsaga.domain.keys import charge_key, refund_key
from invsaga.payments.client import PaymentClient


class RefundOutcome(BaseModel):
    refunded_minor: int
    refund_id: str | None = None


async def refund_what_remains(client: PaymentClient, order_id: str) -> RefundOutcome:
    """Refund whatever is left of the order's charge; nothing when no charge succeeded.

    The charge key is voided first: a charge request still in flight (its activity gave up at the
    payment deadline, its HTTP request did not) then either landed already and is refunded here, or is
    refused when it arrives. Only what remains is refunded, so an earlier partial refund (a goodwill
    gesture) does not make this fail. The saga's compensation and the order reconciler both call this,
    so an unsold order's money goes back by one rule, whoever notices first."""
    charge = await client.void_charges(charge_key(order_id))
    if charge is None or charge.status != "succeeded":
        return RefundOutcome(refunded_minor=0)
    remaining = charge.amount - charge.refunded_amount
    if remaining <= 0:
        return RefundOutcome(refunded_minor=0)
    refund = await client.refund(idempotency_key=refund_key(order_id), charge_id=charge.id, amount=remaining)
    return RefundOutcome(refunded_minor=refund.amount, refund_id=refund.id)
