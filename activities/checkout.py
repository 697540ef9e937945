"""The checkout's database steps composed into two calls, each run as one local activity.

``place_order`` records the order, reserves its stock on every shard and pins the holds: the whole
stock decision, in the workflow's first task. ``confirm_order`` commits the holds on every shard and
records the order confirmed: the whole confirmation, in the task after the charge. A checkout thus
costs two workflow tasks and one activity (the charge) on its happy path, instead of a task per step.

Each part is the same idempotent call the single-step activities make (they are called, so a test
that wraps one of them wraps it here too), so a retry of the whole composite after a crash anywhere
in it replays what was done and does the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar, cast

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import domain_errors_as_application_errors
from activities.models import (
    CommitInput,
    ConfirmOrderInput,
    FinishOrderInput,
    OrderRef,
    PinInput,
    PlacedOrder,
    PlaceOrderInput,
    PreparedOrder,
    PrepareOrderInput,
    ReleaseInput,
    ReleaseOrderInput,
    ReserveInput,
    pin_lines,
    reserve_input,
)
from activities.orders import stock_lines
from invsaga.domain.errors import InvalidInput, ReservationClosed, SlotMoving
from invsaga.domain.stock import HoldState, ReserveOutcome, StockLine, TransitionOutcome

T = TypeVar("T")
#: In the details of a refusal of the order itself on the place step's first attempt: no reserve of
#: this order can have run, so the checkout has nothing to release (and writes no fence rows).
RESERVED_NOTHING = "reserved_nothing"
#: Lines per shard, as ``ShardRouter.group_lines`` answers.
Route = Callable[[list[StockLine]], dict[int, list[StockLine]]]
#: How many of the order's reservation lines are committed, on every shard.
CountSold = Callable[[str], Awaitable[int]]
#: Runs an attempt again, with the slot map reloaded, while a shard refuses it as routed by a stale map
#: (``invsaga.store.rerouting.rerouted`` over the worker's databases).
Reroute = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


async def _once(attempt: Callable[[], Awaitable[T]]) -> T:
    return await attempt()


class OrderSteps(Protocol):
    """The single order steps (``activities.orders.OrderActivities``, or a test's fakes)."""

    def prepare_order(self, inp: PrepareOrderInput) -> Awaitable[PreparedOrder]: ...
    def finish_order(self, inp: FinishOrderInput) -> Awaitable[str]: ...


class InventorySteps(Protocol):
    """The single stock steps (``activities.inventory.InventoryActivities``, or a test's fakes)."""

    def reserve_stock(self, inp: ReserveInput) -> Awaitable[ReserveOutcome]: ...
    def pin_stock(self, inp: PinInput) -> Awaitable[TransitionOutcome]: ...
    def commit_stock(self, inp: CommitInput) -> Awaitable[TransitionOutcome]: ...
    def release_stock(self, inp: ReleaseInput) -> Awaitable[TransitionOutcome]: ...


async def _on_every_shard(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run the per-shard calls at once; on the first failure, cancel the rest and raise it."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(call)) for call in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _awaited(call: Awaitable[T]) -> T:
    return await call


def _details(err: ApplicationError) -> dict[str, object]:
    first = err.details[0] if err.details else None
    return dict(first) if isinstance(first, dict) else {}


class CheckoutActivities:
    def __init__(
        self,
        orders: OrderSteps,
        inventory: InventorySteps,
        route: Route,
        sold: CountSold,
        reroute: Reroute[Any] = _once,
    ) -> None:
        self.orders = orders
        self.inventory = inventory
        self.route = route
        self.sold = sold
        self.reroute = reroute

    async def _routed(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt`` (which routes when it runs), again while a shard refuses it because a slot
        moved: the single steps report that as an ApplicationError of type ``slot_moving``."""

        async def unwrapped() -> T:
            try:
                return await attempt()
            except ApplicationError as err:
                if err.type != SlotMoving.code:
                    raise
                details = {k: v for k, v in _details(err).items() if k not in ("code", "message")}
                raise SlotMoving(err.message, **details) from err

        return cast(T, await self.reroute(unwrapped))

    @activity.defn
    @domain_errors_as_application_errors
    async def place_order(self, inp: PlaceOrderInput) -> PlacedOrder:
        """Record the order, reserve and pin; routed afresh on every attempt (the order's placement
        is computed by ``prepare_order`` from the slot map of the moment)."""
        return await self._routed(lambda: self._place(inp))

    async def _place(self, inp: PlaceOrderInput) -> PlacedOrder:
        try:
            prepared = await self.orders.prepare_order(PrepareOrderInput(request=inp.request))
        except ApplicationError as err:
            if err.non_retryable and activity.info().attempt == 1:
                raise ApplicationError(
                    err.message, {**_details(err), RESERVED_NOTHING: True}, type=err.type, non_retryable=True
                ) from err
            raise
        reserved = await _on_every_shard(
            self.inventory.reserve_stock(reserve_input(prepared, group)) for group in prepared.shards
        )
        placed = PlacedOrder(prepared=prepared, reserved=reserved)
        if any(outcome.state is not HoldState.HELD or outcome.shortages for outcome in reserved):
            return placed  # nothing to pin: the workflow refuses the order and releases what was held
        try:
            await _on_every_shard(
                self.inventory.pin_stock(
                    PinInput(
                        order_id=prepared.order_id,
                        shard=group.shard,
                        lines=pin_lines(group.lines, done.allocations),
                    )
                )
                for group, done in zip(prepared.shards, reserved, strict=True)
            )
        except ApplicationError as err:
            if err.type != ReservationClosed.code:
                raise
            return placed.model_copy(update={"pin_refused": err.message})
        return placed

    @activity.defn
    @domain_errors_as_application_errors
    async def confirm_order(self, inp: ConfirmOrderInput) -> str:
        """Commit on every shard the order's lines route to now, then record the order confirmed; a
        closed hold refuses the commit (``ReservationClosed``) and nothing is recorded."""

        async def commit_everywhere() -> None:
            groups = self.route(inp.lines) if inp.lines else {shard: [] for shard in inp.shards}
            await _on_every_shard(
                self.inventory.commit_stock(CommitInput(order_id=inp.order_id, shard=shard, lines=lines))
                for shard, lines in sorted(groups.items())
            )

        await self._routed(commit_everywhere)
        return await self.orders.finish_order(FinishOrderInput(order_id=inp.order_id, status="confirmed"))

    @activity.defn
    @domain_errors_as_application_errors
    async def sold_lines(self, inp: OrderRef) -> int:
        """The order's committed reservation lines on every shard: more than none after a successful
        charge means a confirmation ran whose workflow task was lost (see the workflow's
        ``_confirmed_by_a_lost_task``)."""
        return await self.sold(inp.order_id)

    @activity.defn
    @domain_errors_as_application_errors
    async def release_order(self, inp: ReleaseOrderInput) -> int:
        """Release the order's holds on every shard its lines route to; returns the lines released.

        Routed here, not from a placement recorded earlier, so it also covers a place step that never
        answered. Lines the store would refuse were never reserved: there is nothing to release.
        """
        try:
            lines = stock_lines(inp.lines)
        except InvalidInput:
            return 0

        async def release_everywhere() -> int:
            released = await _on_every_shard(
                self.inventory.release_stock(ReleaseInput(order_id=inp.order_id, shard=shard, lines=group))
                for shard, group in self.route(lines).items()
            )
            return sum(outcome.moved_lines for outcome in released)

        return await self._routed(release_everywhere)
