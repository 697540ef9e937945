"""The composite checkout steps route again when a single step reports a moved slot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from activities.checkout import CheckoutActivities
from activities.errors import to_application_error
from activities.models import CommitInput, ConfirmOrderInput, FinishOrderInput
from invsaga.domain.errors import SlotMoving
from invsaga.domain.stock import HoldState, StockLine, TransitionOutcome


class Steps:
    def __init__(self) -> None:
        self.commits: list[CommitInput] = []
        self.refusals = 1

    async def commit_stock(self, inp: CommitInput) -> TransitionOutcome:
        self.commits.append(inp)
        if self.refusals:
            self.refusals -= 1
            # As the single step reports it: an ApplicationError whose details carry code and message.
            raise to_application_error(
                SlotMoving("shard 0: slot 7 moved to shard 2", database="shard 0", epoch=3)
            )
        return TransitionOutcome(order_id=inp.order_id, moved_lines=1, state=HoldState.COMMITTED)

    async def finish_order(self, inp: FinishOrderInput) -> str:
        return inp.status


async def test_a_confirmation_refused_for_a_moved_slot_is_routed_again() -> None:
    steps = Steps()
    epochs: list[int] = []

    async def reroute(attempt: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await attempt()
        except SlotMoving as refusal:  # what invsaga.store.rerouting.rerouted catches
            epochs.append(refusal.details["epoch"])
            return await attempt()

    routes = iter(
        [
            {0: [StockLine(sku="A", location="main", quantity=1)]},
            {2: [StockLine(sku="A", location="main", quantity=1)]},
        ]
    )
    composite = CheckoutActivities(
        steps,  # type: ignore[arg-type]
        steps,  # type: ignore[arg-type]
        route=lambda lines: next(routes),
        sold=lambda order_id: None,  # type: ignore[arg-type,return-value]
        reroute=reroute,
    )
    line = StockLine(sku="A", location="main", quantity=1)
    status = await composite.confirm_order.__wrapped__(  # type: ignore[attr-defined]
        composite, ConfirmOrderInput(order_id="o-1", shards=[0], lines=[line])
    )
    assert status == "confirmed"
    assert epochs == [3]
    assert [(c.shard, [ln.sku for ln in c.lines]) for c in steps.commits] == [(0, ["A"]), (2, ["A"])]
