"""Order activities: price and record the order before stock moves, and record how it ended."""

from __future__ import annotations

from temporalio import activity

from activities.errors import domain_errors_as_application_errors
from activities.models import FinishOrderInput, PreparedOrder, PrepareOrderInput, RecordedEnd, ShardLines
from invsaga.domain.checkout import ENDED_ORDER_STATUSES, CheckoutLine, CheckoutStatus, RejectReason
from invsaga.domain.errors import InvalidInput
from invsaga.domain.stock import StockLine
from invsaga.settings import Settings
from invsaga.store.databases import Databases
from invsaga.store.orders import PricedOrder, advance_order, order_exists, price_and_record_order


def stock_lines(lines: list[CheckoutLine]) -> list[StockLine]:
    """The buyer's lines as the store takes them, or InvalidInput naming what is wrong."""
    try:
        return [StockLine.model_validate(line.model_dump()) for line in lines]
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def recorded_end(order: PricedOrder) -> RecordedEnd | None:
    """The end already recorded for ``order``, if it has one; a reason this release does not know (a
    row written by a newer one) is left out."""
    if order.status not in ENDED_ORDER_STATUSES:
        return None
    reason = next((r for r in RejectReason if r.value == order.reason), None)
    return RecordedEnd(status=CheckoutStatus(order.status.upper()), reason=reason, shortages=order.shortages)


class OrderActivities:
    def __init__(self, databases: Databases, settings: Settings) -> None:
        self.databases = databases
        self.settings = settings

    @activity.defn
    @domain_errors_as_application_errors
    async def prepare_order(self, inp: PrepareOrderInput) -> PreparedOrder:
        request = inp.request
        lines = stock_lines(request.lines)
        priced = await price_and_record_order(
            self.databases.core,
            order_id=request.order_id,
            customer_id=request.customer_id,
            currency=request.currency,
            lines=lines,
        )
        groups = self.databases.router.group_lines(lines)
        return PreparedOrder(
            order_id=priced.order_id,
            amount_minor=priced.amount_minor,
            currency=priced.currency,
            shards=[ShardLines(shard=shard, lines=group) for shard, group in groups.items()],
            hold_ttl_seconds=self.settings.hold_ttl_seconds,
            payment_deadline_seconds=self.settings.checkout_payment_deadline_seconds,
            # One charge attempt may take the client's timeout, plus a lookup by key on retries.
            payment_attempt_seconds=2 * self.settings.payment_timeout_seconds + 5,
            allocation=self.settings.allocation_policy,
            recorded_end=recorded_end(priced),
        )

    @activity.defn
    @domain_errors_as_application_errors
    async def finish_order(self, inp: FinishOrderInput) -> str:
        # One UPDATE: autocommit spares it the BEGIN and COMMIT round trips.
        core = self.databases.core_autocommit
        try:
            return await advance_order(core, inp.order_id, inp.status, inp.reason, inp.shortages)
        except InvalidInput:
            if inp.if_recorded and not await order_exists(core, inp.order_id):
                return "absent"
            raise
