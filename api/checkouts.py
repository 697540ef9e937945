"""Checkout operations as the API offers them: one call each on the ``CheckoutClient``, its outcome as an
answer model or a domain error, and Temporal being unreachable as ``unavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from api.models import CancelAccepted, CheckoutAccepted, CheckoutLinks, CheckoutState
from domain.checkout import CheckoutRequest, RejectReason, ReservationView
from domain.errors import (
    CheckoutNotFound,
    InvalidInput,
    InventoryError,
    OutOfStock,
    ReservationClosed,
    ShardUnavailable,
)
from invsaga.checkout_client import CheckoutClient
from workflows import search_attributes as sa

#: How long a caller waits for the stock decision before getting "unavailable, retry with the same key".
#: The checkout itself carries on; a retry attaches to it.
RESERVATION_TIMEOUT_SECONDS = 30.0

#: Statuses a retry can outlive, so they answer 503 and not 500 "outcome unknown". FAILED_PRECONDITION is
#: "workflow task in failed state" while workers restart; UNKNOWN is "transport error" while Temporal does.
_TRANSIENT = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.FAILED_PRECONDITION,
    RPCStatusCode.UNKNOWN,
}
_FINISHED = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED}


@asynccontextmanager
async def temporal_unavailable_as_error() -> AsyncIterator[None]:
    try:
        yield
    except RPCError as err:
        if err.status in _TRANSIENT:
            raise ShardUnavailable(f"Temporal is unavailable: {err.message}", database="temporal") from err
        raise


def answer_for(view: ReservationView) -> CheckoutAccepted:
    """The answer for a stock decision: accepted when held, otherwise the domain error it amounts to."""
    if view.held:
        return CheckoutAccepted(
            order_id=view.order_id, status=view.status, held=True, links=CheckoutLinks.of(view.order_id)
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
    client: CheckoutClient, request: CheckoutRequest, *, screen: bool = True
) -> CheckoutAccepted:
    try:
        async with temporal_unavailable_as_error(), asyncio.timeout(RESERVATION_TIMEOUT_SECONDS):
            view = await client.start(request, screen=screen)
    # The SDK reports our timeout's cancellation (or its own RPC deadline) as its own error type.
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise ShardUnavailable(
            f"no stock decision within {RESERVATION_TIMEOUT_SECONDS:.0f}s; "
            "retry with the same Idempotency-Key",
            database="temporal",
        ) from None
    return answer_for(view)


async def checkout_state(client: CheckoutClient, order_id: str) -> CheckoutState:
    """The final result from history once the checkout has ended, its live state before."""
    async with temporal_unavailable_as_error():
        try:
            description = await client.handle(order_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CheckoutNotFound(f"no checkout for order {order_id!r}", order_id=order_id) from err
            raise
        if description.status in _FINISHED:
            # The result lacks the customer; the search attribute set at start has it.
            customer = description.typed_search_attributes.get(sa.CUSTOMER_ID)
            return CheckoutState.of(await client.result(order_id), customer_id=customer)
        return CheckoutState.of(await client.status(order_id))


async def cancel_checkout(client: CheckoutClient, order_id: str, reason: str) -> CancelAccepted:
    async with temporal_unavailable_as_error():
        result = await client.cancel(order_id, reason)
    return CancelAccepted(
        order_id=result.order_id,
        accepted=result.accepted,
        status=result.status,
        links=CheckoutLinks.of(result.order_id),
    )
