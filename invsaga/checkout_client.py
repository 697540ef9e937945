"""The Python client services use to start, follow and cancel checkouts.

Input is validated here first, so a bad request is refused before anything starts. A checkout is
started with update-with-start on the workflow id ``checkout-{order_id}``: starting the same order
twice attaches to the first checkout, and the caller can get the stock decision synchronously.
"""

from __future__ import annotations

from typing import Any, cast

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionDescription,
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
from temporalio.service import RPCError, RPCStatusCode

from domain.checkout import (
    TASK_QUEUE,
    CancelRequest,
    CancelResult,
    CheckoutLine,
    CheckoutRequest,
    CheckoutResult,
    CheckoutStatus,
    CheckoutView,
    OrderSummary,
    RejectReason,
    ReservationView,
    validate_checkout,
    workflow_id_for,
)
from domain.errors import CancelRefused, CheckoutNotFound, InvalidInput, OrderIdReused
from domain.stock import Shortage
from invsaga.settings import Settings
from invsaga.temporal import connect
from invsaga.temporal_errors import domain_errors
from store.orders import order_exists
from store.sold_out import SoldOutHint
from store.stock import StockStore
from workflows import search_attributes as sa
from workflows.checkout import CheckoutWorkflow


class CheckoutClient:
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = TASK_QUEUE,
        sold_out: SoldOutHint | None = None,
        stock: StockStore | None = None,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.sold_out = sold_out
        #: With the hint, a plain MVCC read of availability (no row lock) screens buyers first.
        self.stock = stock

    @classmethod
    async def connect(cls, settings: Settings) -> CheckoutClient:
        return cls(await connect(settings), task_queue=settings.task_queue)

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

    def _start_operation(
        self, request: CheckoutRequest
    ) -> WithStartWorkflowOperation[CheckoutWorkflow, CheckoutResult]:
        return WithStartWorkflowOperation(CheckoutWorkflow.run, request, **self._start_options(request))

    async def start(self, request: CheckoutRequest, *, screen: bool = True) -> ReservationView:
        """Start (or attach to) the checkout and return once its stock is held or refused.

        With a sold-out hint and ``screen``, a request the screen refuses (see ``screen``) starts
        nothing. Pass ``screen=False`` for a retry that may race its own first attempt: it then always
        attaches to the order's checkout. An answer of "zero left" from the database teaches the hint.
        """
        _check(request)
        hint = self.sold_out
        tokens = {line.sku: hint.token(line.sku) for line in request.lines} if hint else {}
        if screen and hint is not None:
            refusal = await self.screen(request)
            if refusal is not None:
                return refusal
        summary = OrderSummary.of(request)
        try:
            # The update's validator refuses another order under this id (OrderIdReused).
            async with domain_errors(request.order_id):
                view: ReservationView = await self.client.execute_update_with_start_workflow(
                    CheckoutWorkflow.reservation,
                    summary,
                    start_workflow_operation=self._start_operation(request),
                )
        except WorkflowAlreadyStartedError:
            # The order's checkout already finished: answer from its result if it is this order.
            first = OrderSummary.of(await self._first_request(request.order_id))
            problem = first.conflict_with(summary, request.order_id)
            if problem:
                raise OrderIdReused(problem, order_id=request.order_id) from None
            result = await self.result(request.order_id)
            return ReservationView(
                order_id=result.order_id,
                status=result.status,
                held=result.status is CheckoutStatus.CONFIRMED,
                reason=result.reason,
                detail=result.detail,
                shortages=result.shortages,
            )
        if hint is not None:
            self._learn(view.shortages, tokens)
        return view

    async def _first_request(self, order_id: str) -> CheckoutRequest:
        """The request the order's checkout was started with: its history's first event. Read from the
        server, so no worker has to replay the checkout to answer (a query would)."""
        async with domain_errors(order_id):
            async for event in self.handle(order_id).fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                (first,) = await self.client.data_converter.decode(payloads, [CheckoutRequest])
                return cast(CheckoutRequest, first)
        raise CheckoutNotFound(f"no checkout for order {order_id!r}", order_id=order_id)

    async def screen(self, request: CheckoutRequest) -> ReservationView | None:
        """The "out of stock" answer for a request that can be refused without starting anything, else
        None. Without a hint (and a store) nothing is screened.

        A line is short if the hint says the database reported it gone, or if a plain MVCC read (no
        row lock) finds too little. "Available" is never trusted: such a request goes through the
        saga, whose reservation is the one that counts. An order whose checkout already exists is never
        refused here, so a retry finds its own checkout, not the sold-out sign its own purchase put up.
        (A retry racing its first attempt, before that attempt has recorded the order, could still be
        refused; ``start(screen=False)`` is for that case.)
        """
        hint, store = self.sold_out, self.stock
        if hint is None or store is None:
            return None
        refusal = self.hinted_refusal(request)
        if refusal is None:
            tokens = {line.sku: hint.token(line.sku) for line in request.lines}
            short = await self._short_lines(request)
            self._learn(short, tokens)
            refusal = _sold_out_view(request, short) if short else None
        if refusal is None or await order_exists(store.databases.core_autocommit, request.order_id):
            return None
        return refusal

    def hinted_refusal(self, request: CheckoutRequest) -> ReservationView | None:
        """The sold-out answer if the hint says a line is gone. From memory, so it may only be given to
        a request known to be new (see ``screen``)."""
        hint = self.sold_out
        if hint is None:
            return None
        short = [_nothing_left(line) for line in request.lines if hint.sold_out(line.sku, line.location)]
        return _sold_out_view(request, short) if short else None

    def _learn(self, shortages: list[Shortage], tokens: dict[str, tuple[int, int]]) -> None:
        """Mark the lines the database just reported as having nothing left."""
        assert self.sold_out is not None
        for shortage in shortages:
            if shortage.available == 0 and shortage.sku in tokens:
                self.sold_out.mark_sold_out(shortage.sku, shortage.location, tokens[shortage.sku])

    async def _short_lines(self, request: CheckoutRequest) -> list[Shortage]:
        """Lines the database says it cannot fill right now, read without taking any lock."""
        assert self.stock is not None
        levels = await self.stock.get_many([line.sku for line in request.lines])
        available = {
            (level.sku, level.location): level.available for rows in levels.values() for level in rows
        }
        return [
            Shortage(sku=line.sku, location=line.location, requested=line.quantity, available=free)
            for line in request.lines
            if (free := available.get((line.sku, line.location))) is not None and free < line.quantity
        ]

    async def start_without_waiting(self, request: CheckoutRequest) -> str:
        _check(request)
        try:
            async with domain_errors(request.order_id):
                handle = await self.client.start_workflow(
                    CheckoutWorkflow.run, request, **self._start_options(request)
                )
        except WorkflowAlreadyStartedError:
            return workflow_id_for(request.order_id)
        return handle.id

    async def checkout(self, request: CheckoutRequest) -> CheckoutResult:
        """Start and wait for the final result."""
        await self.start(request)
        return await self.result(request.order_id)

    def handle(self, order_id: str) -> WorkflowHandle[CheckoutWorkflow, CheckoutResult]:
        return self.client.get_workflow_handle_for(CheckoutWorkflow.run, workflow_id_for(order_id))

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
            return await self.handle(order_id).query(CheckoutWorkflow.status)

    async def describe(self, order_id: str) -> WorkflowExecutionDescription:
        async with domain_errors(order_id):
            return await self.handle(order_id).describe()

    async def cancel(self, order_id: str, reason: str = "cancelled by request") -> CancelResult:
        # The update's validator refuses once it is too late (CancelRefused).
        async with domain_errors(order_id):
            try:
                return await self.handle(order_id).execute_update(
                    CheckoutWorkflow.cancel, CancelRequest(reason=reason)
                )
            except RPCError as err:
                # An update to a closed (or closing) workflow: not "no such checkout" but "it is over".
                message = err.message.lower()
                if err.status == RPCStatusCode.NOT_FOUND and ("completed" in message or "closing" in message):
                    raise CancelRefused(f"checkout {order_id} has already ended", order_id=order_id) from err
                raise


def _nothing_left(line: CheckoutLine) -> Shortage:
    return Shortage(sku=line.sku, location=line.location, requested=line.quantity, available=0)


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


def _initial_search_attributes(request: CheckoutRequest) -> TypedSearchAttributes:
    """Set at start, so a checkout is searchable before its first workflow task runs."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.ORDER_ID, request.order_id),
            SearchAttributePair(sa.CUSTOMER_ID, request.customer_id),
            SearchAttributePair(sa.CHECKOUT_STATUS, CheckoutStatus.PENDING.value),
        ]
    )


def _check(request: CheckoutRequest) -> None:
    problem = validate_checkout(request)
    if problem:
        raise InvalidInput(problem, order_id=request.order_id)
