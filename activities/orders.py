"""Order activities: price and record the order before stock moves, and record how it ended."""

from __future__ import annotations

from temporalio import activity

from activities.errors import domain_errors_as_application_errors
from activities.models import FinishOrderInput, PreparedOrder, PrepareOrderInput, ShardLines
from invsaga.domain.errors import InvalidInput
from invsaga.domain.stock import StockLine
from invsaga.settings import Settings
from invsaga.store.databases import Databases
from invsaga.store.orders import advance_order, price_and_record_order


class OrderActivities:
    def __init__(self, databases: Databases, settings: Settings) -> None:
        self.databases = databases
        self.settings = settings

    @activity.defn
    @domain_errors_as_application_errors
    async def prepare_order(self, inp: PrepareOrderInput) -> PreparedOrder:
        request = inp.request
        try:
            lines = [StockLine.model_validate(line.model_dump()) for line in request.lines]
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
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
        )

    @activity.defn
    @domain_errors_as_application_errors
    async def finish_order(self, inp: FinishOrderInput) -> str:
        # One UPDATE: autocommit spares it the BEGIN and COMMIT round trips.
        return await advance_order(self.databases.core_autocommit, inp.order_id, inp.status, inp.reason)
