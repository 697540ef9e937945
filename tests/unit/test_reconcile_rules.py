"""The reconciler's rules, one branch each: how an order should have ended, and what it finds."""

from __future__ import annotations

import pytest

from invsaga.domain.checkout import CheckoutStatus
from invsaga.domain.reconcile import (
    ABANDONED,
    ChargeSeen,
    CheckoutSeen,
    CheckoutState,
    FindingKind,
    OrderEvidence,
    OrderRow,
    ShardHolds,
    assess,
    should_end,
)

K = FindingKind
AMOUNT = 2500


def evidence(
    state: CheckoutState = CheckoutState.COMPLETED,
    status: str | None = "CONFIRMED",
    row: str | None = "confirmed",
    lines: dict[int, int] | None = None,
    holds: list[ShardHolds] | None = None,
    charge: str | None = "succeeded",
    refunded: int = 0,
    amount: int = AMOUNT,
) -> OrderEvidence:
    return OrderEvidence(
        order_id="o-1",
        order=None
        if row is None
        else OrderRow(
            status=row, amount_minor=AMOUNT, lines_per_shard=lines if lines is not None else {0: 1}
        ),
        holds=holds if holds is not None else [ShardHolds(shard=0, committed=1)],
        checkout=CheckoutSeen(state=state, status=status),
        charge=None
        if charge is None
        else ChargeSeen(id="ch_1", status=charge, amount=amount, refunded_amount=refunded),
    )


def kinds(ev: OrderEvidence) -> dict[FindingKind, bool]:
    """Each finding's kind and whether its fix is safe."""
    return {f.kind: f.safe for f in assess(ev)}


def test_a_clean_confirmed_order_has_no_findings():
    assert assess(evidence()) == []


@pytest.mark.parametrize("state", [CheckoutState.RUNNING, CheckoutState.CONTINUED_AS_NEW])
def test_an_order_whose_checkout_runs_is_left_to_it(state):
    ev = evidence(state=state, status="PAYING", row="pending", holds=[ShardHolds(shard=0, pinned=1)])
    assert assess(ev) == []


def test_sold_with_a_hold_still_held_is_committed():
    ev = evidence(lines={0: 1, 1: 2}, holds=[ShardHolds(shard=0, committed=1), ShardHolds(shard=1, pinned=2)])
    [finding] = assess(ev)
    assert (finding.kind, finding.safe, finding.shards) == (K.UNCOMMITTED, True, [1])
    assert finding.should_end is CheckoutStatus.CONFIRMED


def test_a_paid_order_whose_line_was_split_across_locations_is_sold():
    """A line without a location may hold at several locations: more pieces than lines."""
    ev = evidence(
        state=CheckoutState.TERMINATED,
        status=None,
        row="paid",
        lines={0: 1, 1: 1},
        holds=[ShardHolds(shard=0, pinned=2), ShardHolds(shard=1, committed=3)],
    )
    assert should_end(ev)[0] is CheckoutStatus.CONFIRMED


@pytest.mark.parametrize(
    "holds",
    [
        [ShardHolds(shard=0, committed=1), ShardHolds(shard=1, expired=1, pinned=1)],
        [ShardHolds(shard=0, committed=1), ShardHolds(shard=1, released=2)],
        [ShardHolds(shard=0, committed=1), ShardHolds(shard=1, pinned=1)],  # one line missing
        [ShardHolds(shard=0, committed=1)],  # no row at all on shard 1
    ],
    ids=["expired", "released", "line-missing", "shard-missing"],
)
def test_sold_with_a_line_gone_is_for_a_person_and_never_partly_committed(holds):
    found = assess(evidence(lines={0: 1, 1: 2}, holds=holds))
    assert [(f.kind, f.safe, f.shards) for f in found] == [(K.HOLDS_LOST, False, [1])]


@pytest.mark.parametrize(
    ("charge", "refunded", "amount"),
    [(None, 0, AMOUNT), ("declined", 0, AMOUNT), ("succeeded", 500, AMOUNT), ("succeeded", 0, 100)],
    ids=["no-charge", "declined", "part-refunded", "wrong-amount"],
)
def test_sold_without_the_full_payment_is_for_a_person(charge, refunded, amount):
    assert kinds(evidence(charge=charge, refunded=refunded, amount=amount)) == {K.NOT_PAID: False}


def test_a_checkout_terminated_after_a_full_charge_with_pinned_holds_is_finished_as_sold():
    ev = evidence(
        state=CheckoutState.TERMINATED, status="PAYING", row="pending", holds=[ShardHolds(shard=0, pinned=1)]
    )
    end, _, reason = should_end(ev)
    assert (end, reason) == (CheckoutStatus.CONFIRMED, None)
    found = {f.kind: f for f in assess(ev)}
    assert set(found) == {K.UNCOMMITTED, K.ORDER_STATUS}
    assert found[K.ORDER_STATUS].safe and found[K.ORDER_STATUS].status == "confirmed"


@pytest.mark.parametrize(
    ("holds", "refunded"),
    [
        ([ShardHolds(shard=0, pinned=1)], 700),  # a goodwill refund: not paid in full
        ([ShardHolds(shard=0, held=1)], 0),  # never pinned: a sweeper could have freed it
    ],
    ids=["part-refunded", "unpinned"],
)
def test_an_abandoned_order_that_is_not_wholly_sold_is_rejected_refunded_and_released(holds, refunded):
    ev = evidence(
        state=CheckoutState.TERMINATED, status="PAYING", row="pending", holds=holds, refunded=refunded
    )
    assert should_end(ev)[0] is CheckoutStatus.REJECTED
    found = {f.kind: f for f in assess(ev)}
    assert {k: f.safe for k, f in found.items()} == {
        K.NOT_REFUNDED: True,
        K.NOT_RELEASED: True,
        K.ORDER_STATUS: True,
    }
    assert (found[K.ORDER_STATUS].status, found[K.ORDER_STATUS].reason) == ("rejected", ABANDONED)
    assert str(AMOUNT - refunded) in found[K.NOT_REFUNDED].fix


def test_an_abandoned_order_missing_a_shard_is_not_sold():
    ev = evidence(
        state=CheckoutState.FAILED, status="PAYING", row="pending", lines={0: 1, 1: 1},
        holds=[ShardHolds(shard=0, pinned=1)],
    )  # fmt: skip
    assert should_end(ev)[0] is CheckoutStatus.REJECTED


def test_an_order_without_a_workflow_is_released_and_recorded_rejected():
    ev = evidence(
        state=CheckoutState.NOT_FOUND,
        status=None,
        row="pending",
        holds=[ShardHolds(shard=1, held=2)],
        charge=None,
    )
    assert kinds(ev) == {K.NOT_RELEASED: True, K.ORDER_STATUS: True}


def test_a_recorded_end_stands_once_temporal_has_dropped_the_history():
    """Past Temporal's retention a confirmed order has no workflow; a goodwill refund must not turn it
    into a rejected order whose rest is refunded."""
    ev = evidence(state=CheckoutState.NOT_FOUND, status=None, refunded=500)
    assert should_end(ev)[0] is CheckoutStatus.CONFIRMED
    assert kinds(ev) == {K.NOT_PAID: False}


def test_committed_stock_of_a_rejected_order_is_never_uncommitted():
    ev = evidence(status="REJECTED", row="rejected", charge="declined")
    assert kinds(ev) == {K.COMMITTED_UNSOLD: False}


def test_a_final_row_that_disagrees_is_for_a_person():
    ev = evidence(status="REJECTED", row="cancelled", holds=[ShardHolds(shard=0, released=1)], charge=None)
    [finding] = assess(ev)
    assert (finding.kind, finding.safe, finding.status) == (K.ORDER_STATUS, False, None)


def test_a_cancelled_workflow_refunds_and_records_cancelled():
    ev = evidence(
        state=CheckoutState.CANCELED, status="PAYING", row="pending", holds=[ShardHolds(shard=0, released=1)]
    )
    found = {f.kind: f for f in assess(ev)}
    assert set(found) == {K.NOT_REFUNDED, K.ORDER_STATUS}
    assert found[K.ORDER_STATUS].status == "cancelled"


def test_holds_without_an_order_row_are_released_and_anything_sold_is_for_a_person():
    ev = evidence(
        state=CheckoutState.NOT_FOUND, status=None, row=None,
        holds=[ShardHolds(shard=0, pinned=1), ShardHolds(shard=1, committed=1)],
    )  # fmt: skip
    found = {f.kind: f for f in assess(ev)}
    assert {k: (f.safe, f.shards) for k, f in found.items()} == {
        K.ORPHAN_HOLDS: (True, [0]),
        K.UNRECORDED_ORDER: (False, [1]),
    }
    assert all(f.should_end is None for f in found.values())
