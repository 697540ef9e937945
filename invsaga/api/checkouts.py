"""Checkout operations as the API offers them: one call each on the ``CheckoutClient``, its outcome as an
answer model or a domain error (``invsaga.temporal.errors``: Temporal being unreachable is ``unavailable``).
"""

from __future__ import annotations

import asyncio

from temporalio.client import WorkflowExecutionStatus

from invsaga.api.models import CancelAccepted, CheckoutAccepted, CheckoutLinks, CheckoutState
from invsaga.api.sold_out import SoldOutScreen
from invsaga.client import CheckoutClient
from invsaga.domain.checkout import CheckoutRequest, RejectReason, ReservationView
from invsaga.domain.errors import (
    InvalidInput,
    InventoryError,
    OutOfStock,
    ReservationClosed,
    ShardUnavailable,
)
from invsaga.temporal import search_attributes as sa
from invsaga.temporal.errors import domain_errors

#: How long a caller waits for the stock decision before getting "unavailable, retry with the same key".
#: The checkout itself carries on; a retry attaches to it.
RESERVATION_TIMEOUT_SECONDS = 30.0

_FINISHED = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED}


def answer_for(view: ReservationView) -> CheckoutAccepted:
    """The answer for a stock decision: accepted when held, otherwise the domain error it amounts to."""
    if view.held:
        return CheckoutAccepted(
            order_id=view.order_id,
            status=view.status,
            held=True,
            allocations=view.allocations,
            links=CheckoutLinks.of(view.order_id),
        )
    raise refusal_for(view)


def refusal_for(view: ReservationView) -> InventoryError:
    """The domain error a refused stock decision amounts to."""
    if view.reason is RejectReason.OUT_OF_STOCK:
        return OutOfStock(
            view.detail or "not enough stock",
            order_id=view.order_id,
            shortages=[shortage.model_dump() for shortage in view.shortages],
            fast_path=view.fast_path,
        )
    if view.reason is RejectReason.INVALID:
        return InvalidInput(view.detail or "the checkout is not valid", order_id=view.order_id)
    # Cancelled, declined, timed out or unavailable: the order's checkout is over and holds nothing.
    reason = f" ({view.reason.value})" if view.reason else ""
    return ReservationClosed(
        f"the checkout of order {view.order_id} already ended {view.status.value}{reason}"
        f"{': ' + view.detail if view.detail else ''}; use a new order id",
        order_id=view.order_id,
        status=view.status.value,
        reason=view.reason.value if view.reason else None,
    )


async def start_checkout(
    client: CheckoutClient,
    request: CheckoutRequest,
    *,
    sold_out: SoldOutScreen | None = None,
    screen: bool = True,
) -> CheckoutAccepted:
    """Start the checkout, through the sold-out screen when there is one (``screen=False`` lets a retry
    through it unscreened, to attach to its first attempt)."""
    deadline = asyncio.timeout(RESERVATION_TIMEOUT_SECONDS)
    try:
        async with domain_errors(request.order_id), deadline:
            if sold_out is not None:
                view = await sold_out.start(request, screen=screen)
            else:
                view = await client.start(request)
    # Our deadline cancels the update: the client reports it as Temporal not answering in time.
    except (TimeoutError, ShardUnavailable):
        if not deadline.expired():
            raise
        raise ShardUnavailable(
            f"no stock decision within {RESERVATION_TIMEOUT_SECONDS:.0f}s; "
            "retry with the same Idempotency-Key",
            database="temporal",
        ) from None
    return answer_for(view)


async def checkout_state(client: CheckoutClient, order_id: str) -> CheckoutState:
    """The final result from history once the checkout has ended, its live state before."""
    async with domain_errors(order_id):
        description = await client.describe(order_id)
        if description.status in _FINISHED:
            # The result lacks the customer; the search attribute set at start has it.
            customer = description.typed_search_attributes.get(sa.CUSTOMER_ID)
            return CheckoutState.of(await client.result(order_id), customer_id=customer)
        return CheckoutState.of(await client.status(order_id))


async def cancel_checkout(client: CheckoutClient, order_id: str, reason: str) -> CancelAccepted:
    async with domain_errors(order_id):
        result = await client.cancel(order_id, reason)
    return CancelAccepted(
        order_id=result.order_id,
        accepted=result.accepted,
        status=result.status,
        links=CheckoutLinks.of(result.order_id),
    )
