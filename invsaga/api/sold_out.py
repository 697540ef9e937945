"""The sold-out screen the API puts in front of the checkout client: refuse a buyer without a workflow.

It needs the store (a lock-free read of availability, and the order-exists check), so it lives here,
where the API composes it with the thin ``CheckoutClient``; a service that only starts checkouts never
loads it. The hint (``invsaga.store.sold_out``) says which rows the database last reported empty.
"""

from __future__ import annotations

from invsaga.client import CheckoutClient, refuse_invalid
from invsaga.domain.checkout import (
    CheckoutLine,
    CheckoutRequest,
    CheckoutStatus,
    RejectReason,
    ReservationView,
)
from invsaga.domain.stock import Shortage, StockLevel
from invsaga.store.orders import order_exists
from invsaga.store.sold_out import SoldOutHint
from invsaga.store.stock import StockStore


class SoldOutScreen:
    def __init__(self, checkouts: CheckoutClient, hint: SoldOutHint, stock: StockStore) -> None:
        self.checkouts = checkouts
        self.hint = hint
        #: With the hint, a plain MVCC read of availability (no row lock) screens buyers first.
        self.stock = stock

    async def start(self, request: CheckoutRequest, *, screen: bool = True) -> ReservationView:
        """Start (or attach to) the checkout unless the screen refuses it (see ``refusal``).

        Pass ``screen=False`` for a retry that may race its own first attempt: it then always attaches
        to the order's checkout. An answer of "zero left" from the database teaches the hint.
        """
        hint = self.hint
        tokens = {line.sku: hint.token(line.sku) for line in request.lines}
        if screen:
            refusal = await self.refusal(request)
            if refusal is not None:
                return refusal
        return await self.checkouts.start(
            request, on_decision=lambda view: self._learn(request, view.shortages, tokens)
        )

    async def refusal(self, request: CheckoutRequest) -> ReservationView | None:
        """The "out of stock" answer for a request that can be refused without starting anything, else
        None.

        A line is short if the hint says the database reported it gone, or if a plain MVCC read (no
        row lock) finds too little. "Available" is never trusted: such a request goes through the
        saga, whose reservation is the one that counts. An order whose checkout already exists is never
        refused here, so a retry finds its own checkout, not the sold-out sign its own purchase put up.
        (A retry racing its first attempt, before that attempt has recorded the order, could still be
        refused; ``start(screen=False)`` is for that case.)
        """
        refuse_invalid(request)
        refusal = self.hinted_refusal(request)
        if refusal is None:
            tokens = {line.sku: self.hint.token(line.sku) for line in request.lines}
            short = await self._short_lines(request)
            self._learn(request, short, tokens)
            refusal = _sold_out_view(request, short) if short else None
        if refusal is None or await order_exists(self.stock.databases.core_autocommit, request.order_id):
            return None
        return refusal

    def hinted_refusal(self, request: CheckoutRequest) -> ReservationView | None:
        """The sold-out answer if the hint says a line is gone. From memory, so it may only be given to
        a request known to be new (see ``refusal``)."""
        short = [
            Shortage(
                sku=line.sku,
                location=line.location or self.hint.named_location(line.sku),
                requested=line.quantity,
                available=0,
            )
            for line in request.lines
            if self.hint.sold_out(line.sku, line.location)
        ]
        return _sold_out_view(request, short) if short else None

    def _learn(
        self, request: CheckoutRequest, shortages: list[Shortage], tokens: dict[str, tuple[int, int]]
    ) -> None:
        """Mark the lines the database just reported as having nothing left. A line without a location
        is short by its SKU's total over every location (it is the SKU's only line), so its zero marks
        the SKU as gone everywhere; a location it names is the SKU's only one."""
        allocated = {line.sku for line in request.lines if line.location is None}
        for shortage in shortages:
            if shortage.available == 0 and shortage.sku in tokens:
                token = tokens[shortage.sku]
                if shortage.sku in allocated:
                    self.hint.mark_sold_out(shortage.sku, None, token, named=shortage.location)
                # Named, it is the line's location, or the only one the SKU has: empty either way.
                if shortage.location is not None:
                    self.hint.mark_sold_out(shortage.sku, shortage.location, token)

    async def _short_lines(self, request: CheckoutRequest) -> list[Shortage]:
        """Lines the database says it cannot fill right now, read without taking any lock."""
        levels = await self.stock.get_many([line.sku for line in request.lines])
        available: dict[tuple[str, str | None], int] = {}
        for rows in levels.values():
            for level in rows:
                available[(level.sku, level.location)] = level.available
                # What a line without a location can have: the sum over the SKU's locations, read in
                # one snapshot per shard, like the reserve's own answer.
                available[(level.sku, None)] = available.get((level.sku, None), 0) + level.available
        return [
            Shortage(sku=line.sku, location=_where(line, levels), requested=line.quantity, available=free)
            for line in request.lines
            if (free := available.get((line.sku, line.location))) is not None and free < line.quantity
        ]


def _where(line: CheckoutLine, levels: dict[str, list[StockLevel]]) -> str | None:
    """The location a shortage names: the line's; for a line without one, the SKU's only location
    when it has just one (as the reserve reports it), else None."""
    if line.location is not None:
        return line.location
    rows = levels.get(line.sku, [])
    return rows[0].location if len(rows) == 1 else None


def _sold_out_view(request: CheckoutRequest, shortages: list[Shortage]) -> ReservationView:
    return ReservationView(
        order_id=request.order_id,
        status=CheckoutStatus.REJECTED,
        held=False,
        reason=RejectReason.OUT_OF_STOCK,
        detail="sold out" if all(s.available == 0 for s in shortages) else "not enough stock",
        shortages=shortages,
        fast_path=True,
    )
