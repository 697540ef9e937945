"""Payment activities over the provider's HTTP API, idempotent by a key derived from the order.

A retry never charges twice: every attempt after the first asks the provider for the charge by key
before charging, and the charge itself carries the same key, so even a lost answer is replayed.
"""

from __future__ import annotations

from temporalio import activity

from activities.errors import domain_errors_as_application_errors
from activities.models import ChargeInput, ChargeOutcome, RefundInput, RefundOutcome
from invsaga.domain.errors import PaymentDeclined
from invsaga.domain.keys import charge_key
from invsaga.payments.client import Charge, PaymentClient
from invsaga.payments.refunds import refund_what_remains


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
