"""Payment activities over the provider's HTTP API, idempotent by a key derived from the order.

A retry never charges twice: every attempt after the first asks the provider for the charge by key
before charging, and the charge itself carries the same key, so even a lost answer is replayed.
"""

from __future__ import annotations

from temporalio import activity

from activities.errors import domain_errors_as_application_errors
from activities.models import ChargeInput, ChargeOutcome, RefundInput, RefundOutcome
from domain.errors import PaymentDeclined
from payments.client import Charge, PaymentClient


def charge_key(order_id: str) -> str:
    return f"charge-{order_id}"


def refund_key(order_id: str) -> str:
    return f"refund-{order_id}"


def _outcome(charge: Charge) -> ChargeOutcome:
    return ChargeOutcome(charge_id=charge.id, status=charge.status, amount_minor=charge.amount)


class PaymentActivities:
    def __init__(self, client: PaymentClient) -> None:
        self.client = client

    @activity.defn
    @domain_errors_as_application_errors
    async def charge_payment(self, inp: ChargeInput) -> ChargeOutcome:
        key = charge_key(inp.order_id)
        if activity.info().attempt > 1:
            earlier = await self.client.find_charge(key)
            if earlier is not None:
                if earlier.status != "succeeded":
                    raise PaymentDeclined(
                        f"payment for order {inp.order_id} was declined", charge_id=earlier.id
                    )
                return _outcome(earlier)
        charge = await self.client.charge(
            idempotency_key=key,
            amount=inp.amount_minor,
            currency=inp.currency,
            token=inp.payment_token,
            reference=inp.order_id,
        )
        return _outcome(charge)

    @activity.defn
    @domain_errors_as_application_errors
    async def refund_payment(self, inp: RefundInput) -> RefundOutcome:
        return await refund_what_remains(self.client, inp.order_id)


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
