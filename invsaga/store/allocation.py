"""Allocation across locations, as ``reserve_stock`` sees it: how a line without a location is sent to
the function, and how its answer rows become a ``ReserveOutcome`` with the split.

The choice of locations itself runs inside ``reserve_stock`` (schema/definitions/shard/reserve_stock.sql),
under the row locks, because it depends on what is available at the request's turn in its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from invsaga.domain.stock import (
    Allocation,
    AllocationPolicy,
    AllocationStrategy,
    HoldState,
    ReserveOutcome,
    Shortage,
    StockLine,
)

#: Marks an allocation rule in reserve_stock's locations array; location codes cannot contain it.
RULE_PREFIX = "*"


def allocation_rule(policy: AllocationPolicy) -> str:
    """The ``p_locations`` element of a line without a location: '*most_available' or
    '*priority:main,east' (the priority list is empty when none is configured)."""
    if policy.strategy is AllocationStrategy.MOST_AVAILABLE:
        return f"{RULE_PREFIX}{policy.strategy.value}"
    return f"{RULE_PREFIX}{policy.strategy.value}:{','.join(policy.priority)}"


def location_argument(line: StockLine, rule: str) -> str:
    return rule if line.location is None else line.location


def reserve_outcome(order_id: str, rows: Sequence[Any]) -> ReserveOutcome:
    """One request's answer rows (see reserve_stock's result) as its outcome."""
    state = rows[0].o_state
    if state == "short":
        return ReserveOutcome(
            order_id=order_id,
            state=None,
            shortages=[
                Shortage(
                    sku=r.o_sku,
                    location=r.o_location,
                    requested=r.o_requested,
                    available=max(0, r.o_available or 0),
                )
                for r in rows
                if r.o_available is None or r.o_available < r.o_requested
            ],
            unknown_skus=[r.o_sku for r in rows if r.o_available is None],
        )
    held = HoldState(state)
    return ReserveOutcome(
        order_id=order_id,
        state=held,
        replayed=bool(rows[0].o_replayed),
        # In key order, so a replay (which reads the rows back) answers the very same list.
        allocations=sorted(
            (
                Allocation(sku=r.o_sku, location=r.o_location, quantity=r.o_requested)
                for r in rows
                if held in (HoldState.HELD, HoldState.COMMITTED)
            ),
            key=lambda a: (a.sku, a.location),
        ),
    )
