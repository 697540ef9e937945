"""The one way back from Temporal's failures to the domain error hierarchy.

Errors leave the hierarchy once per target (``activities.errors`` makes them ``ApplicationError`` types
named by their stable ``code``). This module is the way back, for every caller of Temporal: the checkout
client, and through it the API and the CLI, and the reconciler. So "Temporal is unavailable" is the same
``ShardUnavailable`` (HTTP 503, exit 69) everywhere, and an error a workflow or update raised by code
comes back as its own class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from invsaga.domain.errors import CheckoutNotFound, InventoryError, ShardUnavailable, error_class

#: Statuses a retry can outlive. FAILED_PRECONDITION is "workflow task in failed state" while workers
#: restart; UNKNOWN is "transport error" while Temporal itself restarts.
TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.UNKNOWN,
    }
)


def domain_error(err: BaseException, *, order_id: str | None = None) -> InventoryError | None:
    """The domain error ``err`` stands for, or None when it is not one we know (a bug to surface)."""
    if isinstance(err, InventoryError):
        return err
    if isinstance(err, RPCError):
        if err.status in TRANSIENT:
            return ShardUnavailable(f"Temporal is unavailable: {err.message}", database="temporal")
        if err.status == RPCStatusCode.NOT_FOUND and order_id is not None:
            return CheckoutNotFound(f"no checkout for order {order_id!r}", order_id=order_id)
        return None
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        return ShardUnavailable("Temporal did not answer in time", database="temporal")
    # WorkflowUpdateFailedError, WorkflowFailureError and ActivityError carry the raised error as cause.
    cause = err if isinstance(err, ApplicationError) else getattr(err, "cause", None)
    if isinstance(cause, ApplicationError) and cause.type:
        kind = error_class(cause.type)
        if kind is not None:
            details = {"order_id": order_id} if order_id is not None else {}
            return kind(cause.message, **details)
    return None


@asynccontextmanager
async def domain_errors(order_id: str | None = None) -> AsyncIterator[None]:
    """Raise what Temporal reports inside the block as the domain error it stands for."""
    try:
        yield
    except Exception as err:
        translated = domain_error(err, order_id=order_id)
        if translated is None or translated is err:
            raise
        raise translated from err
