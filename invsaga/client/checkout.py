"""The Python client services use to start, follow and cancel checkouts.

It needs temporalio, pydantic and cryptography only, and a Temporal address: it calls the checkout
workflow by its names (``invsaga.domain.checkout``), never by importing it, so a service carries no
SQLAlchemy, no driver and no shard credentials. (The sold-out screen needs the store; the API puts
it in front of this client, see ``invsaga.api.sold_out``.)

Input is validated here first, so a bad request is refused before anything starts. A checkout is
started with update-with-start on the workflow id ``checkout-{order_id}``: starting the same order
twice attaches to the first checkout, and the caller can get the stock decision synchronously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from invsaga.domain.checkout import (
    CANCEL_UPDATE,
    RESERVATION_UPDATE,
    STATUS_QUERY,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    CancelRequest,
    CancelResult,
    CheckoutRequest,
    CheckoutResult,
    CheckoutStatus,
    CheckoutView,
    OrderSummary,
    ReservationView,
    validate_checkout,
    workflow_id_for,
)
from invsaga.domain.errors import CancelRefused, CheckoutNotFound, InvalidInput, OrderIdReused
from invsaga.temporal import search_attributes as sa
from invsaga.temporal.codec import PayloadKeys
from invsaga.temporal.connection import connect
from invsaga.temporal.errors import domain_errors

#: Called with a stock decision the checkout has just made (not with the answer of one that had ended).
DecisionListener = Callable[[ReservationView], None]


class CheckoutClient:
    #: The workflow type it starts (a benchmark's subclass starts the stepwise shape, for comparison).
    workflow_type = WORKFLOW_TYPE

    def __init__(self, client: Client, *, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    @classmethod
    async def connect(
        cls,
        address: str,
        namespace: str = "default",
        *,
        task_queue: str = TASK_QUEUE,
        keys: PayloadKeys | None = None,
        tls: TLSConfig | bool | None = None,
        api_key: str | None = None,
    ) -> CheckoutClient:
        """``keys`` must be the workers' payload keys when they encrypt (``invsaga.temporal.codec``);
        ``tls`` and ``api_key`` as for ``Client.connect`` (mTLS, Temporal Cloud)."""
        client = await connect(address, namespace, keys=keys, tls=tls, api_key=api_key)
        return cls(client, task_queue=task_queue)

    def _start_options(self, request: CheckoutRequest) -> dict[str, Any]:
        """One checkout per order id: a second start attaches to a running one, never reruns an ended one."""
        return {
            "id": workflow_id_for(request.order_id),
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            "search_attributes": _initial_search_attributes(request),
            "static_summary": f"checkout of order {request.order_id} for {request.customer_id}",
        }

    async def start(
        self, request: CheckoutRequest, *, on_decision: DecisionListener | None = None
    ) -> ReservationView:
        """Start (or attach to) the checkout and return once its stock is held or refused.

        ``on_decision`` hears the decision when this call got it from the running checkout, not when
        the order's checkout had already ended (its old answer says nothing about the stock now).
        """
        refuse_invalid(request)
        summary = OrderSummary.of(request)
        operation: WithStartWorkflowOperation[Any, CheckoutResult] = WithStartWorkflowOperation(
            self.workflow_type, request, result_type=CheckoutResult, **self._start_options(request)
        )
        try:
            # The update's validator refuses another order under this id (OrderIdReused).
            async with domain_errors(request.order_id):
                view: ReservationView = await self.client.execute_update_with_start_workflow(
                    RESERVATION_UPDATE,
                    summary,
                    start_workflow_operation=operation,
                    result_type=ReservationView,
                )
        except WorkflowAlreadyStartedError:
            return await self._ended_answer(request.order_id, summary)
        if on_decision is not None:
            on_decision(view)
        return view

    async def _ended_answer(self, order_id: str, summary: OrderSummary) -> ReservationView:
        """The order's checkout already finished: answer from its result if it is this order."""
        first = OrderSummary.of(await self._first_request(order_id))
        problem = first.conflict_with(summary, order_id)
        if problem:
            raise OrderIdReused(problem, order_id=order_id) from None
        result = await self.result(order_id)
        return ReservationView(
            order_id=result.order_id,
            status=result.status,
            held=result.status is CheckoutStatus.CONFIRMED,
            reason=result.reason,
            detail=result.detail,
            shortages=result.shortages,
        )

    async def _first_request(self, order_id: str) -> CheckoutRequest:
        """The request the order's checkout was started with: its history's first event. Read from the
        server, so no worker has to replay the checkout to answer (a query would)."""
        async with domain_errors(order_id):
            async for event in self.handle(order_id).fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                (first,) = await self.client.data_converter.decode(payloads, [CheckoutRequest])
                return cast(CheckoutRequest, first)
        raise CheckoutNotFound(f"no checkout for order {order_id!r}", order_id=order_id)

    async def start_without_waiting(self, request: CheckoutRequest) -> str:
        refuse_invalid(request)
        try:
            async with domain_errors(request.order_id):
                handle = await self.client.start_workflow(
                    self.workflow_type, request, result_type=CheckoutResult, **self._start_options(request)
                )
        except WorkflowAlreadyStartedError:
            return workflow_id_for(request.order_id)
        return handle.id

    async def checkout(self, request: CheckoutRequest) -> CheckoutResult:
        """Start and wait for the final result."""
        await self.start(request)
        return await self.result(request.order_id)

    def handle(self, order_id: str) -> WorkflowHandle[Any, CheckoutResult]:
        return self.client.get_workflow_handle(workflow_id_for(order_id), result_type=CheckoutResult)

    async def result(self, order_id: str) -> CheckoutResult:
        try:
            async with domain_errors(order_id):
                return await self.handle(order_id).result()
        except WorkflowFailureError as err:
            if isinstance(err.cause, CancelledError):
                return CheckoutResult(
                    order_id=order_id, status=CheckoutStatus.CANCELLED, detail="workflow cancelled"
                )
            raise

    async def status(self, order_id: str) -> CheckoutView:
        """The live state from the workflow's query (it also answers after the checkout ended)."""
        async with domain_errors(order_id):
            view: CheckoutView = await self.handle(order_id).query(STATUS_QUERY, result_type=CheckoutView)
            return view

    async def describe(self, order_id: str) -> WorkflowExecutionDescription:
        async with domain_errors(order_id):
            return await self.handle(order_id).describe()

    async def cancel(self, order_id: str, reason: str = "cancelled by request") -> CancelResult:
        """Ask the checkout to stop. Cancelling twice is harmless: a checkout that a cancel already
        ended (or is ending) answers as the first cancel did; CancelRefused means it ended otherwise."""
        try:
            return await self._request_cancel(order_id, reason)
        except CancelRefused:
            if await self._cancelled_or_cancelling(order_id):
                return CancelResult(order_id=order_id, accepted=True, status=CheckoutStatus.CANCELLED)
            raise

    async def _cancelled_or_cancelling(self, order_id: str) -> bool:
        description = await self.describe(order_id)
        if description.status is not None and description.status != WorkflowExecutionStatus.RUNNING:
            return (await self.result(order_id)).status is CheckoutStatus.CANCELLED  # read from history
        view = await self.status(order_id)
        return view.status is CheckoutStatus.CANCELLED or (view.cancel_requested and not view.status.terminal)

    async def _request_cancel(self, order_id: str, reason: str) -> CancelResult:
        # The update's validator refuses once it is too late (CancelRefused).
        async with domain_errors(order_id):
            try:
                result: CancelResult = await self.handle(order_id).execute_update(
                    CANCEL_UPDATE, CancelRequest(reason=reason), result_type=CancelResult
                )
                return result
            except RPCError as err:
                # An update to a closed (or closing) workflow: not "no such checkout" but "it is over".
                message = err.message.lower()
                if err.status == RPCStatusCode.NOT_FOUND and ("completed" in message or "closing" in message):
                    raise CancelRefused(f"checkout {order_id} has already ended", order_id=order_id) from err
                raise


def _initial_search_attributes(request: CheckoutRequest) -> TypedSearchAttributes:
    """Set at start, so a checkout is searchable before its first workflow task runs."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.ORDER_ID, request.order_id),
            SearchAttributePair(sa.CUSTOMER_ID, request.customer_id),
            SearchAttributePair(sa.CHECKOUT_SKUS, sorted({line.sku for line in request.lines})),
            SearchAttributePair(sa.CHECKOUT_STATUS, CheckoutStatus.PENDING.value),
        ]
    )


def refuse_invalid(request: CheckoutRequest) -> None:
    """Raise InvalidInput for a request no checkout may start with, before anything is started."""
    problem = validate_checkout(request)
    if problem:
        raise InvalidInput(problem, order_id=request.order_id)
