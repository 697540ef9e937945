"""The checkout saga: reserve stock on every shard, pin it, charge, then commit and confirm.

Each compensation is registered before its step runs, because a step that timed out may still have
taken effect. On rejection, a cancel request or a cancelled workflow, the registered compensations run
in reverse, shielded from cancellation, and each is retried until it succeeds. The holds are pinned
before the charge, so no sweeper can free units the buyer is paying for. Once the charge has succeeded
there is only forward recovery: confirmation runs to the end, shielded, and no cancel can undo it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.checkout import RESERVED_NOTHING, CheckoutActivities
    from activities.inventory import InventoryActivities
    from activities.models import (
        ChargeInput,
        ChargeOutcome,
        CommitInput,
        ConfirmOrderInput,
        FinishOrderInput,
        OrderRef,
        PinInput,
        PlaceOrderInput,
        PreparedOrder,
        PrepareOrderInput,
        RefundInput,
        ReleaseInput,
        ReleaseOrderInput,
        ShardLines,
        pin_lines,
        reserve_input,
    )
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from invsaga.domain.checkout import (
        CANCEL_UPDATE,
        RESERVATION_UPDATE,
        STATUS_QUERY,
        STEPWISE_WORKFLOW_TYPE,
        WORKFLOW_TYPE,
        CancelRequest,
        CancelResult,
        CheckoutRequest,
        CheckoutResult,
        CheckoutStatus,
        CheckoutView,
        OrderSummary,
        RejectReason,
        ReservationView,
        validate_checkout,
    )
    from invsaga.domain.errors import (
        CancelRefused,
        InvalidInput,
        OrderIdReused,
        PaymentDeclined,
        ReservationClosed,
        UnknownSku,
    )
    from invsaga.domain.stock import Allocation, HoldState, ReserveOutcome, Shortage, StockLine
    from invsaga.temporal import search_attributes as sa

# Quick database calls run as local activities: no extra Temporal round trips on the buyer's path.
LOCAL_ATTEMPT = timedelta(seconds=10)
LOCAL_DEADLINE = timedelta(minutes=2)
#: At most this long between two attempts of a local step, so a checkout held by a database that was
#: down goes on within seconds of its return (the default backoff would grow to 100 s).
LOCAL_RETRY_MAX = timedelta(seconds=5)
# Compensations and confirmation must eventually succeed: retry until they do.
FOREVER = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
INPUT_ERRORS = [InvalidInput.code, UnknownSku.code]
#: Histories recorded before this patch have no pinning and end a failed compensation REJECTED.
ORDER_ENDS_RIGHT = "order-ends-right-1"
#: A step that must succeed but failed for good is retried after this, doubling up to the maximum.
STUCK_RETRY_FIRST = timedelta(seconds=30)
STUCK_RETRY_MAX = timedelta(hours=1)

In = TypeVar("In")
Out = TypeVar("Out")

#: A saga step run for its effect: a compensation, or a step that must eventually succeed.
Step = Callable[[], Awaitable[object]]


def _quick_db_step(
    step: Callable[[Any, In], Awaitable[Out]], arg: In, *, for_good: list[str]
) -> Awaitable[Out]:
    """A quick database step as a local activity, retried up to LOCAL_DEADLINE unless it fails with one
    of the ``for_good`` error types, which no retry can change."""
    return workflow.execute_local_activity_method(
        step,
        arg,
        retry_policy=RetryPolicy(maximum_interval=LOCAL_RETRY_MAX, non_retryable_error_types=for_good),
        start_to_close_timeout=LOCAL_ATTEMPT,
        schedule_to_close_timeout=LOCAL_DEADLINE,
    )


class _Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str, shortages: list[Shortage] | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.shortages = reason, detail, shortages or []


class _CancelledBefore(Exception):
    """A cancel that an earlier run of this checkout took (see ``CheckoutWorkflow._gone``)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _cause(err: BaseException) -> BaseException | None:
    """What an activity raised: its ActivityError wraps it; a local activity's can arrive unwrapped."""
    return err.cause if isinstance(err, ActivityError) else err


def _message(err: BaseException) -> str:
    cause = _cause(err)
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


def _cancelled(err: BaseException) -> bool:
    return isinstance(_cause(err), CancelledError)


def _error_type(err: BaseException) -> str | None:
    cause = _cause(err)
    return cause.type if isinstance(cause, ApplicationError) else None


def _detail(err: BaseException, key: str) -> object:
    """A field of the domain error an activity raised (``InventoryError.to_dict`` is its first detail)."""
    cause = _cause(err)
    details = cause.details if isinstance(cause, ApplicationError) else ()
    return details[0].get(key) if details and isinstance(details[0], dict) else None


def _skus(request: CheckoutRequest) -> list[str]:
    return sorted({line.sku for line in request.lines})


def _started_with(attributes: TypedSearchAttributes) -> dict[str, object]:
    """The search attributes the checkout was started with (the client sets the order's identity)."""
    return {pair.key.name: pair.value for pair in attributes.search_attributes}


@workflow.defn(name=WORKFLOW_TYPE)
class CheckoutWorkflow:
    """The lean shape: the database steps are two composite local activities (place before the
    charge, confirm after it; see activities/checkout.py), and the search attributes are set at start
    and upserted once before the charge and once at the end. A confirmed checkout, on any number of
    shards, takes two workflow tasks, one activity and 17 history events.

    It is a workflow type of its own (not a ``workflow.patched`` branch, whose marker and
    TemporalChangeVersion upsert would cost two events in every checkout): ``StepwiseCheckoutWorkflow``
    below keeps running, and replaying, the checkouts started under the earlier type."""

    #: False for the stepwise shape of ``StepwiseCheckoutWorkflow``.
    LEAN: ClassVar[bool] = True

    @workflow.init
    def __init__(self, request: CheckoutRequest) -> None:
        self._request = request
        self._status = CheckoutStatus.PENDING
        self._reservation: ReservationView | None = None
        self._result: CheckoutResult | None = None
        self._compensations: list[Step] = []
        self._cancel_requested = False
        self._cancel_reason = CancelRequest().reason
        self._prepared: PreparedOrder | None = None
        self._charge: ChargeOutcome | None = None
        self._charge_task: asyncio.Future[ChargeOutcome] | None = None
        self._attention: str | None = None
        self._ends_right = False
        self._lean = False
        #: Lean: the place step was tried, so the order may be recorded even if it never answered.
        self._placing = False
        #: Lean: confirm_order recorded the order's end itself.
        self._recorded_end = False
        #: Lean: the search attributes as the server has them; only a difference is upserted.
        self._published: dict[str, object] = {}
        #: Per shard, where the reserve put the units (empty in outcomes recorded before allocation).
        self._allocations: dict[int, list[Allocation]] = {}

    @workflow.run
    async def run(self, request: CheckoutRequest) -> CheckoutResult:
        try:
            result = await self._checkout(request)
        except asyncio.CancelledError:
            result = await self._shielded(self._end(CheckoutStatus.CANCELLED, None, "workflow cancelled"))
            if result.status is CheckoutStatus.CANCELLED:  # else a lost task had confirmed it: see _end
                raise
        except _Rejected as rejection:
            result = await self._shielded(
                self._end(CheckoutStatus.REJECTED, rejection.reason, rejection.detail, rejection.shortages)
            )
        except _CancelledBefore as cancelled:
            result = await self._shielded(self._end(CheckoutStatus.CANCELLED, None, cancelled.detail))
        except (ActivityError, ApplicationError) as err:
            if self._ends_right and _cancelled(err):
                # A workflow cancel reaches a local activity (place; prepare, reserve, pin) as its failure.
                result = await self._shielded(self._end(CheckoutStatus.CANCELLED, None, "workflow cancelled"))
                if result.status is CheckoutStatus.CANCELLED:
                    raise asyncio.CancelledError() from err
            else:
                # A dependency stayed down past every retry before the charge: undo what was done.
                workflow.logger.warning("checkout failed: %s", _message(err))
                result = await self._shielded(
                    self._end(CheckoutStatus.REJECTED, RejectReason.UNAVAILABLE, _message(err))
                )
        # Let the reservation update answer its caller before the workflow closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    # --- the steps -----------------------------------------------------------------------------

    async def _checkout(self, request: CheckoutRequest) -> CheckoutResult:
        self._lean = self.LEAN
        self._ends_right = self._lean or workflow.patched(ORDER_ENDS_RIGHT)
        if self._lean:
            self._published = _started_with(workflow.info().typed_search_attributes)
        problem = validate_checkout(request, started_before_order_id_rule=not self._ends_right)
        if problem:
            raise _Rejected(RejectReason.INVALID, problem)
        if not self._lean:
            workflow.upsert_search_attributes(
                [
                    sa.ORDER_ID.value_set(request.order_id),
                    sa.CUSTOMER_ID.value_set(request.customer_id),
                    sa.CHECKOUT_SKUS.value_set(_skus(request)),
                ]
            )
        self._set_status(CheckoutStatus.RESERVING)
        if self._lean:
            prepared = await self._place(request)
        else:
            prepared = await self._prepare(request)
            await self._reserve(prepared)
        if self._cancel_requested:
            return await self._shielded(self._end(CheckoutStatus.CANCELLED, None, self._cancel_reason))
        if self._ends_right and not self._lean:
            await self._pin(prepared)

        self._set_status(CheckoutStatus.PAYING)
        self._publish()
        await self._pay(prepared)
        if self._cancel_requested:
            return await self._shielded(self._end(CheckoutStatus.CANCELLED, None, self._cancel_reason))

        # Paid: from here on a workflow cancel is ignored until the order is confirmed.
        self._set_status(CheckoutStatus.CONFIRMING)
        return await self._shielded(self._confirm_and_end(prepared))

    async def _confirm_and_end(self, prepared: PreparedOrder) -> CheckoutResult:
        await (self._confirm_at_once(prepared) if self._lean else self._confirm(prepared))
        return await self._end(CheckoutStatus.CONFIRMED, None, None)

    async def _place(self, request: CheckoutRequest) -> PreparedOrder:
        """Record the order, reserve and pin its stock in one local activity (activities/checkout.py).
        The release is registered first: a place step that timed out may still have reserved."""
        self._compensations.append(self._release_order)
        self._placing = True
        try:
            placed = await _quick_db_step(
                CheckoutActivities.place_order, PlaceOrderInput(request=request), for_good=INPUT_ERRORS
            )
        except (ActivityError, ApplicationError) as err:
            if _error_type(err) in INPUT_ERRORS:
                if _detail(err, RESERVED_NOTHING):
                    self._compensations.remove(self._release_order)
                raise _Rejected(RejectReason.INVALID, _message(err)) from err
            raise
        self._prepared = placed.prepared
        self._decide(placed.prepared, placed.reserved)
        if placed.pin_refused:
            raise _Rejected(RejectReason.HOLD_LOST, placed.pin_refused)
        self._hold_taken()
        return placed.prepared

    async def _prepare(self, request: CheckoutRequest) -> PreparedOrder:
        try:
            prepared = await _quick_db_step(
                OrderActivities.prepare_order, PrepareOrderInput(request=request), for_good=INPUT_ERRORS
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's non-retryable failure can arrive unwrapped.
            if _error_type(err) in INPUT_ERRORS:
                raise _Rejected(RejectReason.INVALID, _message(err)) from err
            raise
        self._prepared = prepared
        workflow.upsert_search_attributes([sa.CHECKOUT_AMOUNT.value_set(prepared.amount_minor / 100)])
        return prepared

    async def _reserve(self, prepared: PreparedOrder) -> None:
        """Reserve on every shard in parallel; all shards' releases are registered first."""
        self._compensations.append(lambda: self._release_all(prepared.shards))
        outcomes = await asyncio.gather(*(self._reserve_on(group, prepared) for group in prepared.shards))
        self._decide(prepared, outcomes)
        self._hold_taken()

    def _decide(self, prepared: PreparedOrder, outcomes: list[ReserveOutcome]) -> None:
        """The stock decision from every shard's reserve: refuse the order, or go on to the charge."""
        for group, outcome in zip(prepared.shards, outcomes, strict=True):
            if outcome.allocations:
                self._allocations[group.shard] = outcome.allocations
        shortages = [s for outcome in outcomes for s in outcome.shortages]
        unknown = [sku for outcome in outcomes for sku in outcome.unknown_skus]
        if unknown:
            raise _Rejected(RejectReason.INVALID, f"no stock record for {', '.join(unknown)}")
        if shortages:
            raise _Rejected(RejectReason.OUT_OF_STOCK, "not enough stock", shortages)
        lost = [o for o in outcomes if o.state is not HoldState.HELD]
        if lost:
            raise self._gone(prepared, lost[0].state)

    def _gone(self, prepared: PreparedOrder, state: HoldState | None) -> Exception:
        """Why the reserve found the order's hold already ended.

        A workflow task whose local activities ended the order (refused or cancelled it, released its
        stock and recorded its end) is lost if its worker is killed, or the task times out on a loaded
        worker, before it completes. Temporal runs it again, and the re-run's reserve replays the release
        (whose fence rows stop a late reserve). The order ends as the lost task recorded it, short lines
        included, so the result, the buyer's answer and the order row agree; only a release with no end
        recorded, or an expiry, is a hold lost."""
        ended = prepared.recorded_end
        if state is HoldState.RELEASED and ended is not None:
            if ended.status is CheckoutStatus.CANCELLED:
                return _CancelledBefore(self._cancel_reason)
            if ended.status is CheckoutStatus.REJECTED and ended.reason is not None:
                detail = f"{ended.reason.value}, as an earlier run of this checkout recorded"
                return _Rejected(ended.reason, detail, ended.shortages)
        return _Rejected(RejectReason.HOLD_LOST, f"hold already {state} before checkout")

    def _hold_taken(self) -> None:
        """Answer the reservation update: the stock is held."""
        self._reservation = ReservationView(
            order_id=self._request.order_id, status=self._status, held=True, allocations=self._allocated()
        )

    def _allocated(self) -> list[Allocation]:
        return [piece for shard in sorted(self._allocations) for piece in self._allocations[shard]]

    def _pieces(self, group: ShardLines) -> list[StockLine]:
        """What to pin on a shard: every reservation row the reserve made there, so that one missing is
        seen; the lines themselves for an outcome recorded before allocation (all located then)."""
        return pin_lines(group.lines, self._allocations.get(group.shard, []))

    async def _reserve_on(self, group: ShardLines, prepared: PreparedOrder) -> ReserveOutcome:
        return await _quick_db_step(
            InventoryActivities.reserve_stock, reserve_input(prepared, group), for_good=INPUT_ERRORS
        )

    async def _pin(self, prepared: PreparedOrder) -> None:
        """Pin every hold before charging, so none can expire while the buyer pays or the commit waits."""
        try:
            await asyncio.gather(
                *(
                    _quick_db_step(
                        InventoryActivities.pin_stock,
                        PinInput(order_id=prepared.order_id, shard=group.shard, lines=self._pieces(group)),
                        for_good=[ReservationClosed.code],
                    )
                    for group in prepared.shards
                )
            )
        except (ActivityError, ApplicationError) as err:
            if _error_type(err) == ReservationClosed.code:
                raise _Rejected(RejectReason.HOLD_LOST, _message(err)) from err
            raise

    async def _pay(self, prepared: PreparedOrder) -> None:
        # The charge runs as its own task so a cancel cannot abandon it mid-flight: the refund
        # waits for it to land first, or it could look for the charge before the provider has it.
        self._charge_task = asyncio.ensure_future(self._charge_once(prepared))
        self._compensations.append(self._refund)
        try:
            self._charge = await asyncio.shield(self._charge_task)
        except ActivityError as err:
            if _error_type(err) == PaymentDeclined.code:
                raise _Rejected(RejectReason.PAYMENT_DECLINED, "the payment was declined") from err
            # Past the deadline the last attempt's own error can be the cause; the retry state says why.
            if isinstance(err.cause, TimeoutError) or err.retry_state is RetryState.TIMEOUT:
                raise _Rejected(RejectReason.PAYMENT_TIMEOUT, "payment did not complete in time") from err
            raise _Rejected(RejectReason.INVALID, str(err.cause)) from err

    async def _charge_once(self, prepared: PreparedOrder) -> ChargeOutcome:
        return await workflow.execute_activity_method(
            PaymentActivities.charge_payment,
            ChargeInput(
                order_id=prepared.order_id,
                amount_minor=prepared.amount_minor,
                currency=prepared.currency,
                payment_token=self._request.payment_token,
            ),
            start_to_close_timeout=timedelta(seconds=prepared.payment_attempt_seconds),
            schedule_to_close_timeout=timedelta(seconds=prepared.payment_deadline_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=500),
                maximum_interval=timedelta(seconds=10),
                non_retryable_error_types=[PaymentDeclined.code, *INPUT_ERRORS],
            ),
        )

    async def _confirm(self, prepared: PreparedOrder) -> None:
        """Forward recovery only: the buyer has paid, so retry until the stock is committed."""

        async def commit_everywhere() -> None:
            await asyncio.gather(
                *(
                    workflow.execute_activity_method(
                        InventoryActivities.commit_stock,
                        CommitInput(order_id=prepared.order_id, shard=group.shard),
                        start_to_close_timeout=timedelta(seconds=30),
                        retry_policy=RetryPolicy(
                            initial_interval=timedelta(seconds=1),
                            maximum_interval=timedelta(seconds=30),
                            non_retryable_error_types=[ReservationClosed.code],
                        ),
                    )
                    for group in prepared.shards
                )
            )

        try:
            await self._until_done(commit_everywhere, "commit", final=ReservationClosed.code)
        except ActivityError as err:
            # Pinned holds never expire, so only a hold released behind the checkout's back (or one
            # of a history from before pinning) gets here: the units are gone, refund the buyer.
            raise _Rejected(
                RejectReason.HOLD_LOST, f"stock hold was lost before confirmation: {_message(err)}"
            ) from err
        self._compensations.clear()

    async def _confirmed_by_a_lost_task(self) -> bool:
        """Lean: whether a confirmation already committed this order in a workflow task that never
        completed.

        A local activity's result is recorded only when its workflow task completes. The server
        refuses to complete one that would end the workflow while a cancel (a Temporal cancel, or the
        cancel update) arrived meanwhile, and its re-run sees the charge's result and the cancel
        together: it can take the cancel, though confirm_order had already committed the stock and
        recorded the order confirmed. The database says so; the buyer has paid, so the order goes
        forward and ends CONFIRMED, never refunded with its units sold."""
        if not self._lean or self._charge_task is None or self._recorded_end:
            return False
        await workflow.wait([self._charge_task])
        if self._charge_task.cancelled() or self._charge_task.exception() is not None:
            return False
        self._charge = self._charge_task.result()
        order = OrderRef(order_id=self._request.order_id)
        sold = await _quick_db_step(CheckoutActivities.sold_lines, order, for_good=[])
        return sold > 0

    async def _confirm_at_once(self, prepared: PreparedOrder) -> None:
        """Lean: commit on every shard and record the order confirmed, in one local activity; retried
        until it succeeds, as ``_confirm``."""
        confirm = ConfirmOrderInput(
            order_id=prepared.order_id,
            shards=[g.shard for g in prepared.shards],
            lines=[line for group in prepared.shards for line in group.lines],
        )
        try:
            await self._until_done(
                lambda: _quick_db_step(
                    CheckoutActivities.confirm_order, confirm, for_good=[ReservationClosed.code]
                ),
                "commit",
                final=ReservationClosed.code,
            )
        except (ActivityError, ApplicationError) as err:
            raise _Rejected(
                RejectReason.HOLD_LOST, f"stock hold was lost before confirmation: {_message(err)}"
            ) from err
        self._recorded_end = True
        self._compensations.clear()

    # --- compensations ---------------------------------------------------------------------------

    async def _release_order(self) -> None:
        """Lean: release on every shard the lines route to, as one local activity."""
        release = ReleaseOrderInput(order_id=self._request.order_id, lines=self._request.lines)
        await _quick_db_step(CheckoutActivities.release_order, release, for_good=[])

    async def _release_all(self, shards: list[ShardLines]) -> None:
        await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    InventoryActivities.release_stock,
                    ReleaseInput(order_id=self._request.order_id, shard=group.shard, lines=group.lines),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=FOREVER,
                )
                for group in shards
            )
        )

    async def _refund(self) -> None:
        if self._charge_task is not None:
            await workflow.wait([self._charge_task])
        self._publish()  # the refund is a real wait: show that the checkout is compensating
        await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            RefundInput(order_id=self._request.order_id),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=FOREVER,
        )

    async def _compensate(self) -> None:
        if not self._compensations:
            return
        self._set_status(CheckoutStatus.COMPENSATING)
        while self._compensations:
            # Popped only once done, so a compensation interrupted by anything is never lost.
            await self._until_done(self._compensations[-1], "compensation")
            self._compensations.pop()

    async def _until_done(self, step: Step, what: str, *, final: str | None = None) -> None:
        """Run a step that must succeed. Activity retries cover transient errors; if it still fails
        (a non-retryable answer other than ``final``), the checkout stays in its current status, says
        so in its query and the worker's metrics, and tries again later instead of ending wrong."""
        delay = STUCK_RETRY_FIRST
        while True:
            try:
                await step()
            except (ActivityError, ApplicationError) as err:
                if not self._ends_right or _error_type(err) == final:
                    raise
                self._publish()  # stuck for a while: let the list show where
                self._attention = f"{what} failed, retrying in {delay}: {_message(err)}"
                workflow.logger.error("order %s: %s", self._request.order_id, self._attention)
                workflow.metric_meter().create_counter(
                    "invsaga_checkout_stuck_steps", "Saga steps that failed for good and will be retried"
                ).add(1, {"step": what})
                await workflow.sleep(delay)
                delay = min(delay * 2, STUCK_RETRY_MAX)
                continue
            self._attention = None
            return

    async def _end(
        self,
        status: CheckoutStatus,
        reason: RejectReason | None,
        detail: str | None,
        shortages: list[Shortage] | None = None,
    ) -> CheckoutResult:
        if status is CheckoutStatus.CANCELLED and await self._confirmed_by_a_lost_task():
            assert self._prepared is not None
            workflow.logger.warning("order %s: a lost workflow task had confirmed it", self._request.order_id)
            await self._confirm_at_once(self._prepared)
            return await self._end(CheckoutStatus.CONFIRMED, None, None)
        if status is not CheckoutStatus.CONFIRMED:
            await self._compensate()
        if self._lean and self._placing and not self._recorded_end:
            finish = FinishOrderInput(
                order_id=self._request.order_id,
                status=status.lower(),
                reason=reason,
                shortages=shortages or [],
                if_recorded=self._prepared is None,
            )
            await self._until_done(
                lambda: _quick_db_step(OrderActivities.finish_order, finish, for_good=[]),
                "recording the order's end",
            )
        elif self._prepared is not None and not self._lean:
            finish = FinishOrderInput(
                order_id=self._request.order_id,
                status=status.lower(),
                reason=reason,
                shortages=shortages or [],
            )
            await self._until_done(
                lambda: workflow.execute_activity_method(
                    OrderActivities.finish_order,
                    finish,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=FOREVER,
                ),
                "recording the order's end",
            )
        result = CheckoutResult(
            order_id=self._request.order_id,
            status=status,
            reason=reason,
            detail=detail,
            shortages=shortages or [],
            amount_minor=self._prepared.amount_minor if self._prepared else None,
            currency=self._prepared.currency if self._prepared else None,
            charge_id=self._charge.charge_id if self._charge else None,
            allocations=self._allocated(),
        )
        if self._reservation is None:
            self._reservation = ReservationView(
                order_id=result.order_id,
                status=status,
                held=False,
                reason=reason,
                detail=detail,
                shortages=result.shortages,
            )
        self._result = result
        if reason is not None and not self._lean:
            workflow.upsert_search_attributes([sa.REJECT_REASON.value_set(reason.value)])
        self._set_status(status)
        self._publish()
        return result

    @staticmethod
    async def _shielded(step: Awaitable[CheckoutResult]) -> CheckoutResult:
        """Run ``step`` to completion even if the workflow is cancelled while it runs."""
        task = asyncio.ensure_future(step)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    return task.result()

    def _set_status(self, status: CheckoutStatus) -> None:
        self._status = status
        if not self._lean:
            workflow.upsert_search_attributes([sa.CHECKOUT_STATUS.value_set(status.value)])
        # The Web UI's "current details": the step while it runs, then the business outcome, since the
        # workflow's own badge says COMPLETED for a sale and a refusal alike. No command, no event.
        workflow.set_current_details(self._result.headline if self._result else status.value)

    def _publish(self) -> None:
        """Lean: upsert the search attributes that differ from what the server has, in one command.

        Called before each wait that lasts (the charge, a refund, a step stuck behind an outage) and at
        the end, so the list shows where a checkout waits: a status that lasts less than one workflow
        task (RESERVING, CONFIRMING on the happy path) is never upserted, nor is the identity, which the
        client sets at start."""
        if not self._lean:
            return
        wanted: list[SearchAttributeUpdate[Any]] = [
            sa.ORDER_ID.value_set(self._request.order_id),
            sa.CUSTOMER_ID.value_set(self._request.customer_id),
            sa.CHECKOUT_SKUS.value_set(_skus(self._request)),
            sa.CHECKOUT_STATUS.value_set(self._status.value),
        ]
        if self._prepared is not None:
            wanted.append(sa.CHECKOUT_AMOUNT.value_set(self._prepared.amount_minor / 100))
        if self._result is not None and self._result.reason is not None:
            wanted.append(sa.REJECT_REASON.value_set(self._result.reason.value))
        changed = [update for update in wanted if self._published.get(update.key.name) != update.value]
        if changed:
            workflow.upsert_search_attributes(changed)
            self._published.update({update.key.name: update.value for update in changed})

    # --- handlers ----------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CheckoutView:
        base = self._result or CheckoutResult(
            order_id=self._request.order_id,
            status=self._status,
            amount_minor=self._prepared.amount_minor if self._prepared else None,
            currency=self._prepared.currency if self._prepared else None,
            charge_id=self._charge.charge_id if self._charge else None,
            allocations=self._allocated(),
        )
        return CheckoutView(
            **base.model_dump(),
            customer_id=self._request.customer_id,
            cancel_requested=self._cancel_requested,
            attention=self._attention,
        )

    @workflow.update(name=RESERVATION_UPDATE)
    async def reservation(self, order: OrderSummary | None = None) -> ReservationView:
        """Answer once the stock decision is made; used with update-with-start. ``order`` is the
        caller's order, refused by the validator if this checkout is another order's."""
        await workflow.wait_condition(lambda: self._reservation is not None)
        assert self._reservation is not None
        return self._reservation

    @reservation.validator
    def _validate_reservation(self, order: OrderSummary | None = None) -> None:
        problem = order and OrderSummary.of(self._request).conflict_with(order, self._request.order_id)
        if problem:
            raise ApplicationError(problem, type=OrderIdReused.code)

    @workflow.update(name=CANCEL_UPDATE)
    def cancel(self, request: CancelRequest) -> CancelResult:
        accepted = not self._too_late_to_cancel()
        if accepted:
            self._cancel_requested = True
            self._cancel_reason = request.reason  # the result's detail says why it was cancelled
            workflow.logger.info("cancel requested: %s", request.reason)
        return CancelResult(order_id=self._request.order_id, accepted=accepted, status=self._status)

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._too_late_to_cancel():
            raise ApplicationError(
                f"checkout is {self._status.value}; it can no longer be cancelled", type=CancelRefused.code
            )

    def _too_late_to_cancel(self) -> bool:
        return (
            self._status in (CheckoutStatus.CONFIRMING, CheckoutStatus.COMPENSATING) or self._status.terminal
        )


@workflow.defn(name=STEPWISE_WORKFLOW_TYPE)
class StepwiseCheckoutWorkflow(CheckoutWorkflow):
    """Checkouts started before the lean shape, under the type they were started with: a workflow task
    per step, and activities for the confirmation and the compensations. Workers keep it so that those
    checkouts finish, and their histories replay (tests/histories); nothing starts new ones."""

    LEAN = False

    @workflow.init
    def __init__(self, request: CheckoutRequest) -> None:
        super().__init__(request)

    @workflow.run
    async def run(self, request: CheckoutRequest) -> CheckoutResult:
        return await super().run(request)
