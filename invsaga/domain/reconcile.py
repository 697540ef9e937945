"""Invariant 5 across four systems: how an order should have ended, and what disagrees with that.

Pure rules, no I/O: the reconciler (``invsaga.reconcile``) gathers what the core orders, the shards'
reservations, Temporal and the payment provider each say about one order into ``OrderEvidence``, and
``assess`` turns it into findings. Keeping the rules here lets every branch be tested without servers.

The fixes it calls safe only ever move an order the way its own saga would have moved it: refund what was
not sold, release what no saga owns, commit what was sold, record the end. Anything else (a sale without
the money or the units, units sold for an order that was not) is left for a person, because the
reconciler must never charge a buyer and never un-commit stock.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from invsaga.domain.checkout import ENDED_ORDER_STATUSES, CheckoutStatus

#: Recorded on an order row the reconciler finishes for a checkout that ended without saying how.
ABANDONED = "abandoned"


class CheckoutState(StrEnum):
    """Temporal's view of the order's checkout workflow (its execution status, or that it has none)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINATED = "TERMINATED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    TIMED_OUT = "TIMED_OUT"
    NOT_FOUND = "NOT_FOUND"

    @property
    def owned(self) -> bool:
        """The saga still runs, so it owns the order: nothing here may touch it."""
        return self in (CheckoutState.RUNNING, CheckoutState.CONTINUED_AS_NEW)


class CheckoutSeen(BaseModel):
    state: CheckoutState
    #: The CheckoutStatus and RejectReason search attributes; final once the workflow has completed.
    status: str | None = None
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.state.value}/{self.status}" if self.status else self.state.value


class OrderRow(BaseModel):
    status: str
    amount_minor: int
    #: How many of the order's lines route to each shard: where its holds must be.
    lines_per_shard: dict[int, int]


class ShardHolds(BaseModel):
    """The order's reservation lines on one shard, by state; ``pinned`` are held and pinned."""

    shard: int
    held: int = 0
    pinned: int = 0
    committed: int = 0
    released: int = 0
    expired: int = 0

    @property
    def holding(self) -> int:
        return self.held + self.pinned

    def __str__(self) -> str:
        counts = {k: v for k, v in self.model_dump(exclude={"shard"}).items() if v}
        return f"shard {self.shard} " + (" ".join(f"{k}={v}" for k, v in counts.items()) or "none")


class ChargeSeen(BaseModel):
    id: str
    status: str
    amount: int
    refunded_amount: int

    @property
    def remaining(self) -> int:
        return self.amount - self.refunded_amount if self.status == "succeeded" else 0

    def __str__(self) -> str:
        return f"{self.status} {self.amount} refunded {self.refunded_amount}"


class OrderEvidence(BaseModel):
    """What each system says about one order."""

    order_id: str
    order: OrderRow | None
    holds: list[ShardHolds]
    checkout: CheckoutSeen
    charge: ChargeSeen | None

    def shard(self, index: int) -> ShardHolds:
        return next((h for h in self.holds if h.shard == index), ShardHolds(shard=index))

    def summary(self) -> str:
        holds = ", ".join(str(h) for h in self.holds) or "none"
        return (
            f"order row {self.order.status if self.order else 'missing'}; checkout {self.checkout}; "
            f"holds {holds}; charge {self.charge or 'none'}"
        )


class FindingKind(StrEnum):
    UNCOMMITTED = "uncommitted"  # sold, but some holds are still held: commit them
    HOLDS_LOST = "holds_lost"  # sold, but lines expired, were released or are missing
    NOT_PAID = "not_paid"  # sold, but no full charge
    NOT_REFUNDED = "not_refunded"  # not sold, but some of a charge is kept
    NOT_RELEASED = "not_released"  # not sold, but holds are still held
    COMMITTED_UNSOLD = "committed_unsold"  # not sold, but stock is committed
    ORDER_STATUS = "order_status"  # the order row does not say how the order ended
    ORPHAN_HOLDS = "orphan_holds"  # held lines of an order with no order row
    UNRECORDED_ORDER = "unrecorded_order"  # no order row, yet committed stock or a kept charge


class Finding(BaseModel):
    order_id: str
    kind: FindingKind
    problem: str
    fix: str
    #: The fix is idempotent and moves the order only the way its saga would have: ``--repair`` runs it.
    safe: bool
    should_end: CheckoutStatus | None
    why: str
    #: Shards the fix applies to (commit or release), and the status to record (ORDER_STATUS).
    shards: list[int] = []
    status: str | None = None
    reason: str | None = None
    evidence: OrderEvidence
    repaired: bool = False
    repair_error: str | None = None

    @property
    def needs_person(self) -> bool:
        return not self.safe or self.repair_error is not None


def should_end(evidence: OrderEvidence) -> tuple[CheckoutStatus, str, str | None]:
    """The order's right end, why, and the reason to record, for an order with a row whose checkout is
    over or gone."""
    checkout, row = evidence.checkout, evidence.order
    assert row is not None
    if checkout.state is CheckoutState.COMPLETED and checkout.status in _TERMINAL_STATUSES:
        status = CheckoutStatus(checkout.status)
        return status, f"its checkout completed {status.value}", checkout.reason
    if checkout.state is CheckoutState.CANCELED:
        return CheckoutStatus.CANCELLED, "its checkout workflow was cancelled", None
    if row.status in ENDED_ORDER_STATUSES:
        # The saga records the end only after its last stock and payment step, so the row is its word,
        # also once Temporal has dropped the history (retention) of an order that ended long ago.
        return CheckoutStatus(row.status.upper()), f"its checkout recorded {row.status}", None
    ended = "has no workflow" if checkout.state is CheckoutState.NOT_FOUND else f"was {checkout}"
    if _sold(evidence):
        return CheckoutStatus.CONFIRMED, f"its checkout {ended} after a full charge, stock kept", None
    return CheckoutStatus.REJECTED, f"its checkout {ended} before the sale was complete", ABANDONED


_TERMINAL_STATUSES = {s.value for s in CheckoutStatus if s.terminal}


def _sold(evidence: OrderEvidence) -> bool:
    """An abandoned order counts as sold only if the buyer paid in full and every line's units are
    still the buyer's (committed, or held and pinned, so no sweeper could have freed them)."""
    row, charge = evidence.order, evidence.charge
    assert row is not None
    if (
        charge is None
        or charge.status != "succeeded"
        or charge.refunded_amount
        or charge.amount != row.amount_minor
    ):
        return False
    if not row.lines_per_shard:
        return False
    for shard, lines in row.lines_per_shard.items():
        holds = evidence.shard(shard)
        # At least one piece per line: a line without a location may be held at several locations.
        if holds.pinned + holds.committed < lines or holds.held or holds.released or holds.expired:
            return False
    return all(h.shard in row.lines_per_shard for h in evidence.holds)


def assess(evidence: OrderEvidence) -> list[Finding]:
    """Every disagreement of one order whose checkout no longer runs (nothing for one that does)."""
    if evidence.checkout.state.owned:
        return []
    if evidence.order is None:
        return [f.model_copy(update={"why": "no order row"}) for f in _unrecorded(evidence)]
    end, why, reason = should_end(evidence)
    if end is CheckoutStatus.CONFIRMED:
        found = _sold_findings(evidence, why)
    else:
        found = _unsold_findings(evidence, end, why)
    found.extend(_row_findings(evidence, end, why, reason))
    return [f.model_copy(update={"should_end": end, "why": why}) for f in found]


def _finding(
    evidence: OrderEvidence,
    kind: FindingKind,
    problem: str,
    fix: str,
    safe: bool,
    *,
    shards: list[int] | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> Finding:
    return Finding(
        order_id=evidence.order_id,
        kind=kind,
        problem=problem,
        fix=fix,
        safe=safe,
        should_end=None,
        why="",
        shards=shards or [],
        status=status,
        reason=reason,
        evidence=evidence,
    )


def _shards(indexes: list[int]) -> str:
    return f"shard{'s' if len(indexes) > 1 else ''} {', '.join(map(str, indexes))}"


def _sold_findings(evidence: OrderEvidence, why: str) -> list[Finding]:
    row = evidence.order
    assert row is not None
    found: list[Finding] = []
    lost, uncommitted = [], []
    for shard in sorted({*row.lines_per_shard, *(h.shard for h in evidence.holds)}):
        holds = evidence.shard(shard)
        alive = holds.holding + holds.committed
        if holds.released or holds.expired or alive < row.lines_per_shard.get(shard, 0):
            lost.append(shard)
        elif holds.holding:
            uncommitted.append(shard)
    if uncommitted:
        found.append(
            _finding(
                evidence,
                FindingKind.UNCOMMITTED,
                f"sold ({why}), but lines are still held, not committed, on {_shards(uncommitted)}",
                f"commit the order's holds on {_shards(uncommitted)}",
                True,
                shards=uncommitted,
            )
        )
    if lost:
        found.append(
            _finding(
                evidence,
                FindingKind.HOLDS_LOST,
                f"sold ({why}), but lines expired, were released or are missing on {_shards(lost)}",
                "for a person: find the units for the buyer, or refund them; the reconciler never reserves",
                False,
                shards=lost,
            )
        )
    charge = evidence.charge
    if charge is None or charge.status != "succeeded":
        paid = "no charge" if charge is None else f"a {charge.status} charge"
    elif charge.refunded_amount:
        paid = f"{charge.refunded_amount} of its {charge.amount} refunded"
    elif charge.amount != row.amount_minor:
        paid = f"a charge of {charge.amount} for an order of {row.amount_minor}"
    else:
        paid = ""
    if paid:
        found.append(
            _finding(
                evidence,
                FindingKind.NOT_PAID,
                f"sold ({why}), but the payment provider has {paid}",
                "for a person: collect the payment or undo the sale; the reconciler never charges",
                False,
            )
        )
    return found


def _unsold_findings(evidence: OrderEvidence, end: CheckoutStatus, why: str) -> list[Finding]:
    found: list[Finding] = []
    charge = evidence.charge
    if charge is not None and charge.remaining > 0:
        found.append(
            _finding(
                evidence,
                FindingKind.NOT_REFUNDED,
                f"{end.value} ({why}), but {charge.remaining} of its charge {charge.id} is not refunded",
                f"refund the {charge.remaining} that remains (void the charge key, then refund)",
                True,
            )
        )
    held = [h.shard for h in evidence.holds if h.holding]
    if held:
        found.append(
            _finding(
                evidence,
                FindingKind.NOT_RELEASED,
                f"{end.value} ({why}), but lines are still held on {_shards(held)}",
                f"release the order's holds on {_shards(held)}",
                True,
                shards=held,
            )
        )
    committed = [h.shard for h in evidence.holds if h.committed]
    if committed:
        found.append(
            _finding(
                evidence,
                FindingKind.COMMITTED_UNSOLD,
                f"{end.value} ({why}), but its stock is committed (sold) on {_shards(committed)}",
                "for a person: return the units to stock or complete the sale; the reconciler never "
                "un-commits",
                False,
                shards=committed,
            )
        )
    return found


def _row_findings(
    evidence: OrderEvidence, end: CheckoutStatus, why: str, reason: str | None
) -> list[Finding]:
    row = evidence.order
    assert row is not None
    target = end.value.lower()
    if row.status == target:
        return []
    problem = f"the order row says {row.status}, but the order ended {end.value} ({why})"
    if row.status in ENDED_ORDER_STATUSES:
        fix = "for a person: the row is already final and an order's status never moves back"
        return [_finding(evidence, FindingKind.ORDER_STATUS, problem, fix, False)]
    fix = f"record the order as {target}"
    return [_finding(evidence, FindingKind.ORDER_STATUS, problem, fix, True, status=target, reason=reason)]


def _unrecorded(evidence: OrderEvidence) -> list[Finding]:
    """Holds without an order row: no checkout prepared this order (it writes the row before it
    reserves), so nothing says what was bought. Held units are freed; anything sold waits for a person."""
    found: list[Finding] = []
    held = [h.shard for h in evidence.holds if h.holding]
    if held:
        found.append(
            _finding(
                evidence,
                FindingKind.ORPHAN_HOLDS,
                f"lines are held on {_shards(held)} for an order with no order row, and no checkout runs",
                f"release the holds on {_shards(held)}",
                True,
                shards=held,
            )
        )
    committed = [h.shard for h in evidence.holds if h.committed]
    charge = evidence.charge
    if committed or (charge is not None and charge.remaining > 0):
        kept = [f"stock committed on {_shards(committed)}"] if committed else []
        if charge is not None and charge.remaining > 0:
            kept.append(f"{charge.remaining} of charge {charge.id} kept")
        found.append(
            _finding(
                evidence,
                FindingKind.UNRECORDED_ORDER,
                f"no order row, yet {' and '.join(kept)}",
                "for a person: nothing records what was bought, so nothing is refunded or un-committed",
                False,
                shards=committed,
            )
        )
    return found
